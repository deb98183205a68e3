"""``actionq conversations ...``: client commands that talk to the HTTP API."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar

import click
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from actionq.agent.spec import AgentSpec
from actionq.cli.api_client import ApiClient, resolve_api_target
from actionq.crashes.causes import OUTPUT_TAIL_HEADING
from actionq.errors import ActionqError, ApiError
from actionq.models import ConversationStatus, validation_error_text
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


def _summary(item: dict[str, Any]) -> str:
    return _shorten(str(_describe(item)))


def _text(content: Any) -> str:
    """The text of OpenHands' content parts (``[{"type": "text", "text": ...}]``)."""
    if isinstance(content, str):
        return content
    parts = content if isinstance(content, list) else []
    return "\n".join(str(p.get("text", "")) for p in parts if isinstance(p, dict))


def _json_object(text: str) -> dict[str, Any] | None:
    try:
        loaded = json.loads(text)
    except ValueError:
        return None
    return loaded if isinstance(loaded, dict) else None


def _describe_observation(observation: dict[str, Any]) -> str:
    text = _text(observation.get("content"))
    if observation.get("kind") == "MCPToolObservation":
        # A tool OpenHands has no observation for: its content is the JSON of
        # what the tool returned. Its output text, if it has one, reads better.
        result = _json_object(text) or {}
        if not isinstance(result.get("output"), str) and "exit_code" not in result:
            return text
        observation, text = result, str(result.get("output", ""))
    if observation.get("exit_code") is not None:
        timed_out = " (timed out)" if observation.get("timeout") else ""
        return f"exit {observation['exit_code']}{timed_out}: {text.strip()}"
    # file_editor, think, finish: the text the model read
    return ("error: " if observation.get("is_error") else "") + " ".join(text.split())


def _without_facts(error: str) -> str:
    """An AgentErrorEvent's ``error`` without the facts the server appends
    for OpenHands' clients (`` [cause: worker_lost, signal 9, ...]``): the
    CLI shows them from the envelope's ``detail``."""
    facts_at = error.rfind(" [cause: ")
    error = error[:facts_at] if facts_at != -1 and error.endswith("]") else error
    # The command's last output (shown from ``detail``, on one line) too.
    tail_at = error.find(f"\n\n{OUTPUT_TAIL_HEADING}")
    return error[:tail_at] if tail_at != -1 else error


def _describe(item: dict[str, Any]) -> Any:
    """One line about an envelope ``{seq, event, action_id?, detail?}`` of
    ``/events/page`` (``event`` in OpenHands' JSON)."""
    event = item["event"]
    kind = event.get("kind")
    if kind == "ActionEvent":
        # The call as the model made it: there is no `action` when the tool
        # refused its arguments.
        return f"{event['tool_name']} {event['tool_call']['arguments']}"
    if kind == "ObservationEvent":
        return _describe_observation(event["observation"])
    if kind == "AgentErrorEvent":
        d = item.get("detail") or {}
        how = [f"signal {d['signal']}"] if d.get("signal") is not None else []
        if d.get("exitcode") is not None:
            how.append(f"exit code {d['exitcode']}")
        cause = d.get("cause", "error")
        cause = f"{cause} ({', '.join(how)})" if how else cause
        tail = [line for line in str(d.get("output_tail") or "").splitlines() if line.strip()]
        last = f" (last output: {tail[-1].strip()})" if tail else ""
        return f"{cause}: {_without_facts(event['error'])}{last}"
    if kind == "ConversationStateUpdateEvent":
        return f"{event['key']} -> {event['value']}"
    if kind == "UserRejectObservation":
        return event["rejection_reason"]
    if kind == "MessageEvent":
        return f"{event['source']}: {_text(event['llm_message']['content'])}"
    if kind == "ConversationErrorEvent":
        return f"{event['code']}: {event['detail']}"
    return ""


def _action_id(item: dict[str, Any]) -> str:
    """The action an event row names: what `retry` and `actions show` take."""
    event = item["event"]
    if event["kind"] == "ActionEvent":
        return str(event["id"])  # an ActionEvent's id is its action's id
    if event["kind"] == "AgentErrorEvent":
        return str(item.get("action_id") or event.get("parent_id", ""))
    return ""


def _print_events(items: list[dict[str, Any]]) -> None:
    table = Table()
    # In a narrow terminal names and ids are folded onto more lines, never
    # cut (an id is only useful whole), and the detail is wrapped at words.
    table.add_column("seq", no_wrap=True)
    table.add_column("kind", overflow="fold")
    table.add_column("action", overflow="fold")
    table.add_column("detail", ratio=1)
    for item in items:
        kind = item["event"]["kind"]
        style = "red" if kind == "AgentErrorEvent" else None
        row = (str(item["seq"]), kind, _action_id(item), _summary(item))
        table.add_row(*row, style=style)
    console.print(table)


def _agent_facts(conversation: dict[str, Any]) -> str:
    """What a conversation's agent is doing, for `show` and `list`: '' for a
    conversation without an agent (``agent`` null; a field an older API lacks
    counts as 0)."""
    if not conversation.get("agent"):
        return ""
    facts = f"agent, iteration {conversation.get('iteration', 0)}"
    waiting = conversation.get("pending_confirmation", 0)
    if waiting:
        facts += f", {waiting} call{'s' if waiting != 1 else ''} to confirm"
    return facts


def _confirmation_hint(conversation: dict[str, Any]) -> str:
    """What to do about calls that wait for the user, or ''."""
    waiting = conversation.get("pending_confirmation", 0)
    if not waiting or conversation["execution_status"] != "waiting_for_confirmation":
        return ""
    cid = conversation["id"]
    calls = "1 call waits" if waiting == 1 else f"{waiting} calls wait"
    return (
        f"{calls} for confirmation: `actionq conversations confirm {cid}` runs "
        f"{'it' if waiting == 1 else 'them'}, `actionq conversations reject {cid}` does not"
    )


def _echo_status(conversation: dict[str, Any]) -> None:
    click.echo(f"{conversation['id']} {conversation['execution_status']}")
    hint = _confirmation_hint(conversation)
    if hint:
        click.echo(hint)


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


STATUSES = click.Choice([status.value for status in ConversationStatus])


@conversations.command("list")
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    default=100,
    show_default=True,
    help="At most this many (read 100 at a time).",
)
@click.option("--status", type=STATUSES, default=None, help="Only conversations in this status.")
@click.option("--oldest-first", is_flag=True, help="Oldest first (default: newest first).")
@click.option(
    "--page-id",
    default=None,
    metavar="ID",
    help="Go on where a list stopped (it prints the --page-id to use).",
)
@json_option
@with_client
def list_(
    client: ApiClient,
    limit: int,
    status: str | None,
    oldest_first: bool,
    page_id: str | None,
    as_json: bool,
) -> None:
    """List conversations, newest first."""
    page = _conversation_pages(client, limit, status, not oldest_first, page_id)

    def human() -> None:
        table = Table()
        table.add_column("id", overflow="fold")  # folded, never cut: only useful whole
        for column in ("status", "events", "agent", "created", "updated"):
            table.add_column(column)
        for c in page["items"]:
            shown = c["execution_status"]
            style = "red" if shown == "error" else None
            row = (c["id"], shown, str(c["last_seq"]), _agent_facts(c) or "-", c["created_at"])
            table.add_row(*row, c["updated_at"], style=style)
        console.print(table)
        if page["next_page_id"] is not None:
            # On stderr: stdout stays the table, for a pipe.
            click.echo(f"more: add --page-id {page['next_page_id']}", err=True)

    _emit(page, as_json, human)


def _conversation_pages(
    client: ApiClient, limit: int, status: str | None, newest_first: bool, page_id: str | None
) -> dict[str, Any]:
    """Up to ``limit`` conversations from ``page_id`` on, as one page
    ``{items, next_page_id}`` (the API gives at most 100 a request)."""
    items: list[dict[str, Any]] = []
    while True:
        page = client.search_conversations(
            page_id, min(100, limit - len(items)), status=status, newest_first=newest_first
        )
        items += page["items"]
        page_id = page["next_page_id"]
        if page_id is None or len(items) >= limit:
            return {"items": items, "next_page_id": page_id}


CONFIRM_POLICIES: dict[str, dict[str, Any]] = {
    "never": {"kind": "NeverConfirm"},
    "always": {"kind": "AlwaysConfirm"},
    "risky": {"kind": "ConfirmRisky"},  # threshold HIGH; tools without a risk too
}
confirm_choice = click.Choice(list(CONFIRM_POLICIES))


def _read_script(path: Path) -> dict[str, Any]:
    """An agent script file: a JSON list of turns, or a whole scripted AgentSpec."""
    try:
        loaded = json.loads(path.read_text())
    except OSError as e:
        raise click.BadParameter(f"cannot read {path}: {e.strerror or e}") from e
    except ValueError as e:
        raise click.BadParameter(f"{path} is not JSON: {e}") from e
    if isinstance(loaded, list):
        return {"kind": "scripted", "turns": loaded}
    if isinstance(loaded, dict) and loaded.get("kind", "scripted") == "scripted":
        return loaded | {"kind": "scripted"}
    raise click.BadParameter(
        f"{path} must hold a list of turns or an agent spec of kind scripted", param_hint="FILE"
    )


def agent_spec(
    script: Path | None, profile: str | None, confirm: str | None, max_iterations: int | None
) -> dict[str, Any] | None:
    """The AgentSpec `create` sends, checked here so that a mistake in the
    script is reported with the file's name; None: no agent."""
    if script is not None and profile is not None:
        raise click.UsageError("--agent-script and --model-profile are two agents: give one")
    if script is None and profile is None:
        if confirm is not None or max_iterations is not None:
            raise click.UsageError(
                "--confirm and --max-iterations need an agent (--agent-script or --model-profile)"
            )
        return None
    spec: dict[str, Any] = (
        _read_script(script) if script else {"kind": "llm", "model_profile": profile}
    )
    if confirm is not None:
        spec["confirmation_policy"] = CONFIRM_POLICIES[confirm]
    if max_iterations is not None:
        spec["max_iterations"] = max_iterations
    try:
        AgentSpec.model_validate(spec)
    except ValidationError as e:
        where = f"{script}: " if script else ""
        raise click.BadParameter(f"{where}not a valid agent: {validation_error_text(e)}") from e
    return spec


@conversations.command()
@click.option(
    "--agent-script",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    metavar="FILE",
    help="A scripted agent: a JSON file with a list of turns "
    '([{"text": ..., "tool_calls": [{"tool": ..., "arguments": {...}}]}, ...]) '
    "or a whole AgentSpec of kind scripted.",
)
@click.option(
    "--model-profile",
    default=None,
    metavar="NAME",
    help="An LLM agent using this model profile of the server (its key stays on the server).",
)
@click.option(
    "--confirm",
    type=confirm_choice,
    default=None,
    help="Which tool calls wait for your confirmation (default: never; risky: HIGH risk "
    "and tools that declare none).",
)
@click.option(
    "--max-iterations",
    type=click.IntRange(min=1),
    default=None,
    help="Model steps per run (default: the server's ACTIONQ_AGENT_MAX_ITERATIONS).",
)
@click.option(
    "--message", default=None, metavar="TEXT", help="A first message; the agent runs on it."
)
@click.option(
    "--id",
    "conversation_id",
    default=None,
    metavar="ID",
    help="Its id (default: a new UUID); an existing id is shown as it is, unchanged.",
)
@json_option
@with_client
def create(
    client: ApiClient,
    agent_script: Path | None,
    model_profile: str | None,
    confirm: str | None,
    max_iterations: int | None,
    message: str | None,
    conversation_id: str | None,
    as_json: bool,
) -> None:
    """Create a conversation; prints its id.

    Without an agent it runs the tool calls you `submit`. With one
    (--agent-script or --model-profile), `message --run` and `run` drive it."""
    spec = agent_spec(agent_script, model_profile, confirm, max_iterations)
    if message is not None and spec is None:
        raise click.UsageError("--message needs an agent (--agent-script or --model-profile)")
    body: dict[str, Any] = {}
    if conversation_id is not None:
        body["conversation_id"] = conversation_id
    if spec is not None:
        body["agent"] = spec
    if message is not None:
        body["initial_message"] = {"role": "user", "content": message, "run": True}
    conversation = client.create_conversation(body or None)
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
        facts = _agent_facts(conversation)
        console.print(
            f"[bold]{conversation['id']}[/]  status [bold]{conversation['execution_status']}[/]"
            + (f"  ({facts})" if facts else ""),
            highlight=False,
        )
        _print_events(events)
        hint = _confirmation_hint(conversation)
        if hint:
            console.print(hint, highlight=False, markup=False)

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
                for item in client.stream(conversation_id, last_seq):
                    lost_since = None
                    last_seq = item["seq"]
                    _print_tailed(item, as_json)
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


def _print_tailed(item: dict[str, Any], as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(item))
    else:
        console.print(f"{item['seq']:>5}  {item['event']['kind']:<28} {_summary(item)}")


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
    """Pause between steps: the tool call or model step in flight finishes,
    nothing new starts until `run` (`interrupt` stops it now)."""
    client.pause(conversation_id)
    _show_status(client, conversation_id, as_json)


@conversations.command()
@click.argument("conversation_id")
@json_option
@with_client
def interrupt(client: ApiClient, conversation_id: str, as_json: bool) -> None:
    """Stop now: a running tool call is killed (recorded as cancelled), a model
    step in flight is dropped; `run` goes on."""
    client.interrupt(conversation_id)
    _show_status(client, conversation_id, as_json)


@conversations.command()
@click.argument("conversation_id")
@json_option
@with_client
def run(client: ApiClient, conversation_id: str, as_json: bool) -> None:
    """Run a conversation (from idle, paused, error, stuck; nothing that
    crashed runs again). Waiting for confirmation: use `confirm` or `reject`."""
    client.run(conversation_id)
    _show_status(client, conversation_id, as_json)


@conversations.command()
@click.argument("conversation_id")
@click.argument("text")
@click.option("--run", "run_after", is_flag=True, help="Run the conversation after the message.")
@json_option
@with_client
def message(
    client: ApiClient, conversation_id: str, text: str, run_after: bool, as_json: bool
) -> None:
    """Send a user message; prints the conversation's status.

    With --run the agent runs (a running one reads it at its next step)."""
    client.send_message(conversation_id, text, run=run_after)
    _show_status(client, conversation_id, as_json)


@conversations.command()
@click.argument("conversation_id")
@json_option
@with_client
def confirm(client: ApiClient, conversation_id: str, as_json: bool) -> None:
    """Accept the tool calls waiting for confirmation: they run, once."""
    client.respond_to_confirmation(conversation_id, accept=True)
    _show_status(client, conversation_id, as_json)


@conversations.command()
@click.argument("conversation_id")
@click.option(
    "--reason",
    default=None,
    help="Told to the agent with each rejected call (default: User rejected the action.).",
)
@json_option
@with_client
def reject(client: ApiClient, conversation_id: str, reason: str | None, as_json: bool) -> None:
    """Reject the tool calls waiting for confirmation: none runs, the agent
    reads why at its next step (`run` or `message --run`)."""
    client.respond_to_confirmation(conversation_id, accept=False, reason=reason)
    _show_status(client, conversation_id, as_json)


@conversations.command()
@click.argument("conversation_id")
@click.argument("policy", type=confirm_choice)
@json_option
@with_client
def policy(client: ApiClient, conversation_id: str, policy: str, as_json: bool) -> None:
    """Which of the agent's next tool calls wait for confirmation: never,
    always, or risky (HIGH risk and tools that declare none)."""
    client.set_confirmation_policy(conversation_id, CONFIRM_POLICIES[policy])
    _show_status(client, conversation_id, as_json)


def _show_status(client: ApiClient, conversation_id: str, as_json: bool) -> None:
    """After a route that answers only ``{"success": true}``: the
    conversation's info (its status, and what waits for confirmation)."""
    conversation = client.get_conversation(conversation_id)
    _emit(conversation, as_json, lambda: _echo_status(conversation))


@conversations.command()
@click.argument("conversation_id")
@json_option
@with_client
def delete(client: ApiClient, conversation_id: str, as_json: bool) -> None:
    """Delete a conversation and its history. Refused while it runs or waits
    for confirmation (`pause` or `interrupt` it first); its workspace folder
    is kept."""
    client.delete_conversation(conversation_id)
    _emit({"success": True}, as_json, lambda: click.echo(f"{conversation_id} deleted"))


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
