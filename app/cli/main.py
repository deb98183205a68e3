"""The ``actionq`` command line."""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from actionq.cli.conversations import actions, conversations
from actionq.errors import ActionqError, ConfigurationError, StoreUnavailableError
from actionq.settings import get_settings, load_settings

if TYPE_CHECKING:
    from actionq.store import ActionStore

__all__ = ["main"]


def _hide_password(url: str) -> str:
    return re.sub(r":[^:@/]*@", ":***@", url)


def _recover_naming_the_url(store: ActionStore, queue: str) -> list[str]:
    """Start-up recovery; Redis away is an error that says which Redis."""
    from functools import partial

    from actionq.crashes.sweep import recover_orphaned_actions
    from actionq.messaging.celery_app import get_celery_app
    from actionq.messaging.dispatch import send_action

    try:
        return recover_orphaned_actions(store, partial(send_action, get_celery_app(), queue))
    except StoreUnavailableError as e:
        url = _hide_password(get_settings().redis_url)
        raise StoreUnavailableError(f"{e} (ACTIONQ_REDIS_URL={url})") from e


class ActionqGroup(click.Group):
    """The top group: actionq's own errors are one line on stderr and exit 1,
    never a traceback; a command that never read the settings (--help,
    --version) still works, with a warning if they are wrong."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ActionqError as e:
            click.echo(f"error: {e}", err=True)
        raise click.exceptions.Exit(1)

    def main(self, args: Sequence[str] | None = None, *more: Any, **options: Any) -> Any:
        try:
            return super().main(args, *more, **options)
        except SystemExit as e:
            if e.code in (0, None):  # succeeded without reading the settings
                try:
                    load_settings()
                except ConfigurationError as problem:
                    click.echo(f"warning: {problem}", err=True)
            raise


@click.group(cls=ActionqGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="actionq")
def main() -> None:
    """actionq: every tool call of an AI agent is a durable Celery job.

    Settings come from ACTIONQ_* environment variables (see docs/configuration.md).
    """


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="API address.")
@click.option("--port", default=8000, show_default=True, type=int, help="API port.")
@click.option(
    "--data-dir",
    type=click.Path(path_type=Path),
    default=Path(".actionq"),
    show_default=True,
    help="Server data (append-only file), API key, logs (created 0700).",
)
@click.option(
    "--workers",
    default=2,
    show_default=True,
    type=int,
    help="Worker pool processes (actions that run at once).",
)
def up(host: str, port: int, data_dir: Path, workers: int) -> None:
    """Start everything: state server, a worker and the HTTP API.

    With no ACTIONQ_REDIS_URL an embedded server keeps its data in DATA_DIR,
    so restarting on the same folder keeps every conversation. An API key is
    created (or reused) in DATA_DIR/api-key, unless ACTIONQ_API_KEYS is set.
    Each conversation's tools run in DATA_DIR/workspace/<conversation id>
    (ACTIONQ_WORKDIR, if set, replaces DATA_DIR/workspace). One `up` per
    folder; a worker or server that dies is restarted. Ctrl-C or SIGTERM
    stops it, letting running actions finish (twice: cuts them off).
    """
    from actionq.local.up import run_up

    run_up(data_dir, host, port, workers)


_DATA_DIR_OF_UP = click.option(
    "--data-dir",
    type=click.Path(path_type=Path),
    default=Path(".actionq"),
    show_default=True,
    help="The data folder of the running `actionq up`.",
)


@main.command()
@_DATA_DIR_OF_UP
def env(data_dir: Path) -> None:
    """Print the settings that join a running `actionq up`, for a shell.

    eval "$(actionq env)" lets a Python ActionQ(), another worker, Flower or
    the client commands use that up's server. Secrets are read from their
    files in DATA_DIR when the lines are evaluated; they are not printed.
    """
    from actionq.local.attach import env_lines

    click.echo("\n".join(env_lines(data_dir)))


@main.command()
@_DATA_DIR_OF_UP
@click.option("--address", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=5555, show_default=True, type=int, help="Port to listen on.")
def flower(data_dir: Path, address: str, port: int) -> None:
    """Start Flower (the Celery dashboard) on a running `actionq up`.

    Basic auth: user `actionq`, password generated once and kept in
    DATA_DIR/flower.password (0600).
    """
    from actionq.local.attach import exec_flower

    exec_flower(data_dir, address, port)


@main.command()
@click.option("--host", default=None, help="Address (default: ACTIONQ_API_HOST).")
@click.option("--port", default=None, type=int, help="Port (default: ACTIONQ_API_PORT).")
def api(host: str | None, port: int | None) -> None:
    """Serve the HTTP API (needs ACTIONQ_API_KEYS)."""
    import uvicorn

    from actionq.api import create_app, server_options

    settings = get_settings()
    uvicorn.run(
        create_app(settings),
        host=host or settings.api_host,
        port=port or settings.api_port,
        **server_options(settings),
    )


@main.command()
@click.option(
    "--data-dir",
    type=click.Path(path_type=Path),
    default=None,
    help="Keep the demo's server data and logs here (default: a temp folder).",
)
def demo(data_dir: Path | None) -> None:
    """Show a crashing action become an AgentErrorEvent, not a second run.

    Starts an embedded server and a worker, runs a conversation in which one
    action kills its worker process, resumes, and runs the next action.
    """
    from actionq.local.demo import run_demo

    sys.exit(0 if run_demo(data_dir) else 1)


@main.command(context_settings={"ignore_unknown_options": True})
@click.option(
    "-c",
    "--concurrency",
    type=int,
    default=None,
    help="Pool processes (default: number of CPUs); with --agent, threads "
    "(default: ACTIONQ_AGENT_CONCURRENCY).",
)
@click.option(
    "--agent",
    is_flag=True,
    help="Serve agent steps (model calls, a thread pool) instead of tool calls.",
)
@click.argument("celery_args", nargs=-1, type=click.UNPROCESSED)
def worker(concurrency: int | None, agent: bool, celery_args: tuple[str, ...]) -> None:
    """Run a worker (``celery -A actionq worker`` with actionq's pool settings):
    tool calls on the prefork pool, or with --agent agent steps on threads.

    Extra arguments are passed to ``celery worker``.
    """
    from actionq.local.processes import worker_command
    from actionq.secrets import SecretBox, is_secret_setting

    settings = get_settings()  # a wrong setting: one line here, not Celery's traceback
    env = dict(os.environ)
    if agent:
        command = worker_command(
            concurrency or settings.agent_concurrency, agent=True, queue=settings.agent_queue
        )
        SecretBox.from_settings(settings)  # an unusable key file: one line, now
    else:
        command = worker_command(concurrency or os.cpu_count() or 1, queue=settings.queue)
        # Tools run here: not even the path of the secret key (`actionq env`
        # exports it, for agent workers) goes into this worker's environment,
        # which its tools could read in /proc.
        env = {k: v for k, v in env.items() if not is_secret_setting(k)}
    os.execve(sys.executable, command + list(celery_args), env)


@main.command()
def recover() -> None:
    """Error the actions of dead workers once, as a worker does at start-up."""
    from actionq.runtime import get_store

    errored = _recover_naming_the_url(get_store(), get_settings().queue)
    click.echo(f"errored {len(errored)} orphaned action(s)")


@main.command()
@click.option(
    "--interval",
    type=float,
    default=None,
    help="Seconds between sweeps (default: ACTIONQ_SWEEP_INTERVAL).",
)
@click.option("--once", is_flag=True, help="Sweep once and exit.")
def sweeper(interval: float | None, once: bool) -> None:
    """Error the actions of workers whose lease expired, until stopped (and,
    with ACTIONQ_ARCHIVE_AFTER_SECONDS, archive old conversations).

    Every worker already sweeps; run this as well when workers may all be
    gone (or scaled to zero), so a dead worker's action is still reported
    within the lease. Starts with a full recovery scan.
    """
    import logging
    import time
    from functools import partial

    from actionq.archive import archiver_from_settings, sweep_logged
    from actionq.crashes.sweep import Repairs, sweep_expired_leases
    from actionq.messaging.celery_app import get_celery_app
    from actionq.messaging.dispatch import send_action, step_sender
    from actionq.runtime import get_store

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    settings = get_settings()
    store = get_store()
    celery_app = get_celery_app()
    dispatch = partial(send_action, celery_app, settings.queue)
    send_step = step_sender(celery_app, settings)
    repairs = Repairs(settings.turn_resend_seconds)
    recovered = _recover_naming_the_url(store, settings.queue)
    click.echo(f"start-up recovery errored {len(recovered)} action(s)")
    period = interval or settings.sweep_interval
    archiver = archiver_from_settings(store, settings)
    archived_at = float("-inf")
    while True:
        try:
            errored = sweep_expired_leases(store, send_step=send_step)
            repairs.run(store, dispatch, send_step)
            if errored:
                click.echo(f"errored {len(errored)} action(s) of dead workers: {errored}")
        except ActionqError as e:  # Redis away for a moment: keep going
            click.echo(f"sweep failed: {e}", err=True)
        if archiver is not None and (
            once or time.monotonic() - archived_at >= settings.archive_interval
        ):
            archived_at = time.monotonic()
            report = sweep_logged(archiver)
            if report is not None and report.archived:
                click.echo(f"archived {len(report.archived)} conversation(s)")
        if once:
            return
        time.sleep(period)


@main.command()
@click.option("--markdown", is_flag=True, help="Print the table of all settings, for the docs.")
def config(markdown: bool) -> None:
    """Show the effective settings (secrets hidden)."""
    from actionq.settings import settings_markdown_table

    if markdown:
        click.echo(settings_markdown_table())
        return
    for name, value in get_settings().model_dump().items():
        shown = value
        if name in ("api_keys", "api_key") and value:
            shown = "***"
        elif isinstance(value, str) and "url" in name:
            shown = _hide_password(value)
        click.echo(f"ACTIONQ_{name.upper()}={shown}")


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print the LLM tool specs as JSON.")
def tools(as_json: bool) -> None:
    """List the registered tools (built-ins and ACTIONQ_TOOL_MODULES) and their risk."""
    from actionq.tools import load_tool_modules, registered_tools

    load_tool_modules(get_settings().tool_modules)
    if as_json:
        click.echo(json.dumps([t.spec() for t in registered_tools()], indent=2))
        return
    for t in registered_tools():
        click.echo(f"{t.name:12} {t.risk:8} {' '.join(t.description.split())}")


main.add_command(conversations)
main.add_command(actions)
