"""``actionq conversations ...``: client commands that talk to the HTTP API."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.table import Table

from actionq.cli.api_client import ApiClient, resolve_api_target
from actionq.errors import ActionqError, ApiError
from actionq.settings import get_settings

__all__ = ["actions", "conversations"]

F = TypeVar("F", bound=Callable[..., Any])
# Rich fits tables to the terminal, and to 80 columns when there is none; ids
# cut to fit would be useless in a pipe, so there lines are as long as needed.
console = Console() if Console().is_terminal else Console(width=10_000)


DETAIL_LIMIT = 120  # characters of a detail cell: room for a command line


def _shorten(text: str, limit: int = DETAIL_LIMIT) -> str:
    """``text`` cut after its last whole word that fits, with an ellipsis."""
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    space = cut.rfind(" ")
    if space > limit // 2:  # one very long word: cut inside it rather than drop it
        cut = cut[:space]
    return cut.rstrip() + "…"


def _summary(event: dict[str, Any]) -> str:
    return _shorten(str(_describe(event)))


def _describe(event: dict[str, Any]) -> Any:
    kind = event.get("kind")
    if kind == "ActionEvent":
        return f"{event['tool_name']} {json.dumps(event['action'])}"
    if kind == "ObservationEvent":
        obs = event["observation"]
        if "exit_code" in obs:
            return f"exit {obs['exit_code']}: {str(obs.get('output', '')).strip()}"
        return json.dumps(obs)
    if kind == "AgentErrorEvent":
        d = event["detail"]
        how = [f"signal {d['signal']}"] if d.get("signal") is not None else []
        if d.get("exitcode") is not None:
            how.append(f"exit code {d['exitcode']}")
        cause = f"{d['cause']} ({', '.join(how)})" if how else d["cause"]
        return f"{cause}: {event['error']}"
    if kind == "ConversationStateUpdateEvent":
        return f"{event['key']} -> {event['value']}"
    if kind == "UserRejectObservation":
        return event["rejection_reason"]
    return ""


def _action_id(event: dict[str, Any]) -> str:
    """The action an event row names: what `retry` and `actions show` take."""
    if event["kind"] == "ActionEvent":
        return str(event["id"])  # an ActionEvent's id is its action's id
    if event["kind"] == "AgentErrorEvent":
        return str(event["action_id"])
    return ""


def _print_events(events: list[dict[str, Any]]) -> None:
    table = Table()
    # In a narrow terminal names and ids are folded onto more lines, never
    # cut (an id is only useful whole), and the detail is wrapped at words.
    table.add_column("seq", no_wrap=True)
    table.add_column("kind", overflow="fold")
    table.add_column("action", overflow="fold")
    table.add_column("detail", ratio=1)
    for event in events:
        style = "red" if event["kind"] == "AgentErrorEvent" else None
        row = (str(event["seq"]), event["kind"], _action_id(event), _summary(event))
        table.add_row(*row, style=style)
    console.print(table)


def _echo_status(conversation: dict[str, Any]) -> None:
    click.echo(f"{conversation['id']} {conversation['status']}")


def _emit(data: Any, as_json: bool, human: Callable[[], None]) -> None:
    if as_json:
        click.echo(json.dumps(data, indent=2))
    else:
        human()


def _fail(error: Exception, as_json: bool) -> None:
    """Print an error (JSON on stderr under --json) and exit 1."""
    if isinstance(error, ApiError):
        status, code, message = error.status or None, error.code, error.message
    elif isinstance(error, click.ClickException):
        status, code, message = None, "bad_parameter", error.format_message()
    else:
        status, code, message = None, getattr(error, "code", "error"), str(error)
    if as_json:
        payload = {"error": {"status": status, "code": code, "message": message}}
        click.echo(json.dumps(payload), err=True)
    else:
        click.echo(f"error: {error}", err=True)
    sys.exit(1)


def with_client(fn: F) -> F:
    """Adds --url/--api-key and turns errors into a message (JSON under --json)
    and exit code 1."""

    @click.option("--url", default=None, help="API URL (default: ACTIONQ_API_URL, then .actionq).")
    @click.option("--api-key", default=None, help="API key (default: ACTIONQ_API_KEY).")
    @wraps(fn)
    def wrapper(url: str | None, api_key: str | None, **kwargs: Any) -> Any:
        as_json = bool(kwargs.get("as_json"))
        try:
            base, key = resolve_api_target(get_settings(), url, api_key)
        except ActionqError as e:
            _fail(e, as_json)
        client = ApiClient(base, key)
        try:
            return fn(client, **kwargs)
        except ActionqError as e:
            if isinstance(e, ApiError) and e.code == "quarantined" and not as_json:
                click.echo(f"error: {e}", err=True)
                click.echo("use --force to run it anyway", err=True)
                sys.exit(1)
            _fail(e, as_json)
        except click.ClickException as e:
            if not as_json:
                raise
            _fail(e, as_json)
        finally:
            client.close()

    return wrapper  # type: ignore[return-value]


json_option = click.option(
    "--json", "as_json", is_flag=True, help="Machine-readable output (errors: JSON on stderr)."
)


@click.group()
def conversations() -> None:
    """Conversations, through the HTTP API (`actionq up` prints where it is)."""


@conversations.command("list")
@click.option("--limit", default=100, show_default=True)
@json_option
@with_client
def list_(client: ApiClient, limit: int, as_json: bool) -> None:
    """List conversations."""
    page = client.list_conversations(limit=limit)

    def human() -> None:
        table = Table()
        table.add_column("id", overflow="fold")  # folded, never cut: only useful whole
        for column in ("status", "events", "updated"):
            table.add_column(column)
        for c in page["items"]:
            style = "red" if c["status"] == "error" else None
            table.add_row(c["id"], c["status"], str(c["last_seq"]), c["updated_at"], style=style)
        console.print(table)

    _emit(page, as_json, human)


@conversations.command()
@json_option
@with_client
def create(client: ApiClient, as_json: bool) -> None:
    """Create a conversation; prints its id."""
    conversation = client.create_conversation()
    _emit(conversation, as_json, lambda: click.echo(conversation["id"]))


@conversations.command()
@click.argument("conversation_id")
@click.argument("tool")
@click.argument("arguments", default="{}")
@click.option("--idempotency-key", default=None)
@json_option
@with_client
def submit(
    client: ApiClient,
    conversation_id: str,
    tool: str,
    arguments: str,
    idempotency_key: str | None,
    as_json: bool,
) -> None:
    """Post a tool call, e.g. `submit ID terminal '{"command": "ls"}'`."""
    try:
        parsed = json.loads(arguments)
    except json.JSONDecodeError as e:
        raise click.BadParameter(f"ARGUMENTS is not JSON: {e}") from e
    body = {"tool": tool, "arguments": parsed, "idempotency_key": idempotency_key}
    action = client.submit_action(conversation_id, body)
    _emit(action, as_json, lambda: click.echo(f"{action['id']} {action['state']}"))


@conversations.command()
@click.argument("conversation_id")
@json_option
@with_client
def show(client: ApiClient, conversation_id: str, as_json: bool) -> None:
    """A conversation's status and all its events."""
    conversation = client.get_conversation(conversation_id)
    events = client.all_events(conversation_id)

    def human() -> None:
        console.print(f"[bold]{conversation['id']}[/]  status [bold]{conversation['status']}[/]")
        _print_events(events)

    _emit({"conversation": conversation, "events": events}, as_json, human)


@conversations.command()
@click.argument("conversation_id")
@click.option("--after-seq", default=0, show_default=True, help="Start after this seq.")
@click.option(
    "--reconnect-for",
    default=10.0,
    show_default=True,
    help="Seconds to keep reconnecting after the stream is lost (0: give up at once).",
)
@json_option
@with_client
def tail(
    client: ApiClient, conversation_id: str, after_seq: int, reconnect_for: float, as_json: bool
) -> None:
    """Follow a conversation's events live (Ctrl-C to stop).

    A lost stream is resumed after the last event shown (Last-Event-ID);
    if that fails for --reconnect-for seconds, tail says so and exits 1."""
    last_seq = after_seq
    lost_since: float | None = None
    try:
        while True:
            try:
                for event in client.stream(conversation_id, last_seq):
                    lost_since = None
                    last_seq = event["seq"]
                    _print_tailed(event, as_json)
                reason = "the server ended the stream"
            except ApiError as e:
                if e.status != 0:
                    raise  # the API refused (401, 404...): reconnecting will not help
                reason = str(e)
            now = time.monotonic()
            lost_since = now if lost_since is None else lost_since
            if now - lost_since >= reconnect_for:
                raise ApiError(0, "stream_lost", f"{reason}; last event shown: seq {last_seq}")
            time.sleep(min(1.0, reconnect_for))
    except KeyboardInterrupt:
        pass


def _print_tailed(event: dict[str, Any], as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(event))
    else:
        console.print(f"{event['seq']:>5}  {event['kind']:<28} {_summary(event)}")


@conversations.command()
@click.argument("conversation_id")
@json_option
@with_client
def resume(client: ApiClient, conversation_id: str, as_json: bool) -> None:
    """Resume a conversation in error or paused (nothing crashed is re-run)."""
    conversation = client.resume(conversation_id)
    _emit(conversation, as_json, lambda: _echo_status(conversation))


@conversations.command()
@click.argument("conversation_id")
@json_option
@with_client
def pause(client: ApiClient, conversation_id: str, as_json: bool) -> None:
    """Pause a conversation (its running action is stopped)."""
    conversation = client.pause(conversation_id)
    _emit(conversation, as_json, lambda: _echo_status(conversation))


@conversations.command()
@click.argument("action_id")
@click.option("--force", is_flag=True, help="Run it even if it crashed too often.")
@json_option
@with_client
def retry(client: ApiClient, action_id: str, force: bool, as_json: bool) -> None:
    """Run an action's call again, as a new action."""
    action = client.retry(action_id, force)
    _emit(action, as_json, lambda: click.echo(f"{action['id']} {action['state']}"))


@click.group()
def actions() -> None:
    """Actions (tool calls), through the HTTP API; ids are in `conversations show`."""


@actions.command("show")
@click.argument("action_id")
@json_option
@with_client
def show_action(client: ApiClient, action_id: str, as_json: bool) -> None:
    """An action's state, call and outcome."""
    action = client.get_action(action_id)

    def human() -> None:
        shown = {
            "id": action["id"],
            "conversation": action["conversation_id"],
            "state": action["state"],
            "tool": action["tool"],
            "arguments": json.dumps(action["arguments"]),
            "attempt": action.get("attempt"),
            "created": action.get("created_at"),
            "ended as": action.get("terminal_kind"),
            "retry of": action.get("retry_of"),
            "worker": action.get("owner"),
        }
        for label, value in shown.items():
            if value is not None:
                click.echo(f"{label + ':':<14}{value}")

    _emit(action, as_json, human)
