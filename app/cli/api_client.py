"""A small HTTP client for the actionq API (used by the ``actionq conversations`` commands)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from actionq.errors import ApiError, ConfigurationError
from actionq.settings import Settings

__all__ = ["ApiClient", "resolve_api_target"]

DEFAULT_DATA_DIR = Path(".actionq")


def resolve_api_target(
    settings: Settings, url: str | None, key: str | None, data_dir: Path = DEFAULT_DATA_DIR
) -> tuple[str, str | None]:
    """Option, then ACTIONQ_API_URL / ACTIONQ_API_KEY, then what `actionq up`
    wrote in its data folder, then the defaults."""
    found: dict[str, str] = {}
    connection_file = data_dir / "api.json"
    if connection_file.exists():
        try:
            found = json.loads(connection_file.read_text())
        except (OSError, ValueError) as e:
            raise ConfigurationError(f"cannot read {connection_file}: {e}") from e
    resolved_url = url or settings.api_url or found.get("url") or "http://127.0.0.1:8000"
    fallback_key = settings.api_keys[0] if settings.api_keys else None
    resolved_key = key or settings.api_key or found.get("api_key") or fallback_key
    return resolved_url.rstrip("/"), resolved_key


class ApiClient:
    def __init__(self, url: str, api_key: str | None, timeout: float = 30.0) -> None:
        headers = {"X-Session-API-Key": api_key} if api_key else {}
        self.http = httpx.Client(base_url=url, headers=headers, timeout=timeout)

    def close(self) -> None:
        self.http.close()

    def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.HTTPError as e:
            url = str(self.http.base_url).rstrip("/")
            raise ApiError(
                0,
                "unreachable",
                f"cannot reach the actionq API at {url}: {e} — is `actionq up` running "
                "here? (or set ACTIONQ_API_URL / --url)",
            ) from e
        _raise_for_error(response)
        return response.json()

    def create_conversation(self, body: dict[str, Any] | None = None) -> dict[str, Any]:
        """``body``: ``{id?, agent?, initial_message?}`` (docs/api.md); none: a
        plain conversation."""
        result: dict[str, Any] = self._request("POST", "/api/conversations", json=body)
        return result

    def list_conversations(self, offset: int = 0, limit: int = 100) -> dict[str, Any]:
        result: dict[str, Any] = self._request(
            "GET", "/api/conversations", params={"offset": offset, "limit": limit}
        )
        return result

    def get_conversation(self, conversation_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self._request("GET", f"/api/conversations/{conversation_id}")
        return result

    def submit_action(self, conversation_id: str, body: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = self._request(
            "POST", f"/api/conversations/{conversation_id}/actions", json=body
        )
        return result

    def resume(self, conversation_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self._request(
            "POST", f"/api/conversations/{conversation_id}/resume"
        )
        return result

    def pause(self, conversation_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self._request(
            "POST", f"/api/conversations/{conversation_id}/pause"
        )
        return result

    def run(self, conversation_id: str) -> dict[str, Any]:
        return self._conversation_verb(conversation_id, "run")

    def interrupt(self, conversation_id: str) -> dict[str, Any]:
        return self._conversation_verb(conversation_id, "interrupt")

    def _conversation_verb(self, conversation_id: str, verb: str) -> dict[str, Any]:
        result: dict[str, Any] = self._request(
            "POST", f"/api/conversations/{conversation_id}/{verb}"
        )
        return result

    def send_message(self, conversation_id: str, text: str, *, run: bool = False) -> None:
        self._request(
            "POST",
            f"/api/conversations/{conversation_id}/events",
            json={"role": "user", "content": text, "run": run},
        )

    def respond_to_confirmation(
        self, conversation_id: str, *, accept: bool, reason: str | None = None
    ) -> None:
        body: dict[str, Any] = {"accept": accept}
        if reason is not None:
            body["reason"] = reason
        self._request(
            "POST",
            f"/api/conversations/{conversation_id}/events/respond_to_confirmation",
            json=body,
        )

    def set_confirmation_policy(self, conversation_id: str, policy: dict[str, Any]) -> None:
        self._request(
            "POST",
            f"/api/conversations/{conversation_id}/confirmation_policy",
            json={"policy": policy},
        )

    def get_action(self, action_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self._request("GET", f"/api/actions/{action_id}")
        return result

    def retry(self, action_id: str, force: bool = False) -> dict[str, Any]:
        result: dict[str, Any] = self._request(
            "POST", f"/api/actions/{action_id}/retry", json={"force": force}
        )
        return result

    def events(self, conversation_id: str, after_seq: int = 0, limit: int = 100) -> dict[str, Any]:
        result: dict[str, Any] = self._request(
            "GET",
            f"/api/conversations/{conversation_id}/events",
            params={"after_seq": after_seq, "limit": limit},
        )
        return result

    def all_events(self, conversation_id: str) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        after = 0
        while True:
            page = self.events(conversation_id, after, 1000)
            events += page["items"]
            if page["next_after_seq"] is None:
                return events
            after = page["next_after_seq"]

    def stream(
        self,
        conversation_id: str,
        after_seq: int = 0,
        *,
        until_seq: int | None = None,
        timeout: float | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Follow the SSE stream; yields event dicts until the server ends it
        (``until_seq``, ``timeout``). A connection that breaks raises
        ``ApiError`` with status 0."""
        path = f"/api/conversations/{conversation_id}/events/stream"
        headers = {"Last-Event-ID": str(after_seq)}
        params: dict[str, Any] = {}
        if until_seq is not None:
            params["until_seq"] = until_seq
        if timeout is not None:
            params["timeout"] = timeout
        try:
            with self.http.stream(
                "GET", path, headers=headers, params=params, timeout=None
            ) as response:
                if response.is_error:
                    response.read()
                    _raise_for_error(response)
                data: list[str] = []
                for line in response.iter_lines():
                    if line.startswith("data:"):
                        data.append(line[5:].lstrip())
                    elif line == "" and data:
                        yield json.loads("\n".join(data))
                        data = []
        except httpx.HTTPError as e:
            raise ApiError(0, "unreachable", f"event stream from {self.http.base_url}: {e}") from e


def _raise_for_error(response: httpx.Response) -> None:
    """Raise the API's error (``ApiError``) if ``response`` is one."""
    if not response.is_error:
        return
    try:
        error = response.json()["error"]
        raise ApiError(response.status_code, error["code"], error["message"])
    except (ValueError, KeyError, TypeError):
        raise ApiError(response.status_code, "http_error", response.text) from None
