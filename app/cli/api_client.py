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
        """``body``: OpenHands' ``StartConversationRequest`` (``conversation_id``,
        ``agent``, ``initial_message``, ``confirmation_policy``,
        ``max_iterations``; docs/api.md); none: a plain conversation. Returns
        its ``ConversationInfo``."""
        result: dict[str, Any] = self._request("POST", "/api/conversations", json=body)
        return result

    def search_conversations(
        self,
        page_id: str | None = None,
        limit: int = 100,
        *,
        status: str | None = None,
        newest_first: bool = True,
    ) -> dict[str, Any]:
        """One page ``{items, next_page_id}`` (``limit`` at most 100); pass
        ``next_page_id`` back as ``page_id`` for the next."""
        params: dict[str, Any] = {
            "limit": limit,
            "sort_order": "CREATED_AT_DESC" if newest_first else "CREATED_AT",
        }
        if page_id is not None:
            params["page_id"] = page_id
        if status is not None:
            params["status"] = status
        result: dict[str, Any] = self._request("GET", "/api/conversations/search", params=params)
        return result

    def count_conversations(self, status: str | None = None) -> int:
        params = {"status": status} if status is not None else {}
        return int(self._request("GET", "/api/conversations/count", params=params))

    def get_conversations(self, ids: list[str]) -> list[dict[str, Any] | None]:
        """Several at once, in order (None: no such conversation)."""
        result: list[dict[str, Any] | None] = self._request(
            "GET", "/api/conversations", params={"ids": ids}
        )
        return result

    def get_conversation(self, conversation_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self._request("GET", f"/api/conversations/{conversation_id}")
        return result

    def delete_conversation(self, conversation_id: str) -> None:
        self._request("DELETE", f"/api/conversations/{conversation_id}")

    def submit_action(self, conversation_id: str, body: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = self._request(
            "POST", f"/api/conversations/{conversation_id}/actions", json=body
        )
        return result

    def resume(self, conversation_id: str) -> dict[str, Any]:
        """Returns the conversation's info (actionq's own route)."""
        result: dict[str, Any] = self._request(
            "POST", f"/api/conversations/{conversation_id}/resume"
        )
        return result

    # run, pause and interrupt are OpenHands' routes: they answer only
    # {"success": true}; get_conversation says what they did.
    def run(self, conversation_id: str) -> None:
        self._request("POST", f"/api/conversations/{conversation_id}/run")

    def pause(self, conversation_id: str) -> None:
        self._request("POST", f"/api/conversations/{conversation_id}/pause")

    def interrupt(self, conversation_id: str) -> None:
        self._request("POST", f"/api/conversations/{conversation_id}/interrupt")

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
        """actionq's own paging, ``{items, next_after_seq}``: each item an
        envelope ``{seq, event, action_id?, detail?, retry_of?}``, ``event``
        in OpenHands' JSON (``limit`` at most 1000)."""
        result: dict[str, Any] = self._request(
            "GET",
            f"/api/conversations/{conversation_id}/events/page",
            params={"after_seq": after_seq, "limit": limit},
        )
        return result

    def all_events(self, conversation_id: str) -> list[dict[str, Any]]:
        """Every envelope, oldest first."""
        events: list[dict[str, Any]] = []
        after = 0
        while True:
            page = self.events(conversation_id, after, 1000)
            events += page["items"]
            if page["next_after_seq"] is None:
                return events
            after = page["next_after_seq"]

    def search_events(
        self,
        conversation_id: str,
        page_id: str | None = None,
        limit: int = 100,
        **filters: str,
    ) -> dict[str, Any]:
        """OpenHands' event search, ``{items, next_page_id}``: events in the
        SDK's JSON, oldest first; ``filters``: ``kind``, ``source``, ``body``."""
        params: dict[str, Any] = {"limit": limit, **filters}
        if page_id is not None:
            params["page_id"] = page_id
        result: dict[str, Any] = self._request(
            "GET", f"/api/conversations/{conversation_id}/events/search", params=params
        )
        return result

    def get_event(self, conversation_id: str, event_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self._request(
            "GET", f"/api/conversations/{conversation_id}/events/{event_id}"
        )
        return result

    def stream(
        self,
        conversation_id: str,
        after_seq: int = 0,
        *,
        until_seq: int | None = None,
        timeout: float | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Follow the SSE stream; yields envelopes (``{"seq", "event", ...}``,
        as ``events`` pages have them) until the server ends it
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
