"""All configuration, read once from the environment (prefix ``ACTIONQ_``).

A mistyped setting is an error, not silently ignored: unknown ``ACTIONQ_*``
variables are rejected when the settings are loaded.
"""

from __future__ import annotations

import difflib
import os
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from actionq.errors import ConfigurationError

ENV_PREFIX = "ACTIONQ_"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
# The kombu transport used for redis:// brokers (``actionq.messaging.transport``).
OUR_TRANSPORT = "actionq.messaging.transport:Transport"


# The statuses archival may take (docs/operations.md, "Retention and archival").
ArchivableStatus = Literal["finished", "idle", "error", "paused", "stuck"]


def _split_commas(value: Any) -> Any:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class Settings(BaseSettings):
    """actionq settings. Every field maps to ``ACTIONQ_<FIELD NAME IN CAPITALS>``."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid")

    redis_url: str = Field(
        DEFAULT_REDIS_URL,
        description=(
            "URL of the state store: redis://, rediss:// or unix:// (one server), "
            "redis+sentinel://host:port[,host:port...]/<primary name>[/<db>] (Sentinel) or "
            "redis+cluster://host:port[,host:port...] (Redis Cluster). Also the broker "
            "unless a broker URL is set (a Cluster store needs one)."
        ),
    )
    broker_url: str | None = Field(None, description="Optional separate broker, e.g. amqp://.")
    broker_transport: str | None = Field(
        None,
        description=(
            "kombu transport for the broker. Unset: actionq's Redis transport for redis:// "
            "brokers (kombu's, with events and acks not waited for; see docs/design.md), "
            "else kombu's choice. 'redis': kombu's own."
        ),
    )
    broker_queue_type: Literal["classic", "quorum"] = Field(
        "classic",
        description=(
            "RabbitMQ: the type of the queues Celery declares. 'quorum': replicated, "
            "and publishes wait for RabbitMQ's confirm (a queue that exists keeps its type: "
            "delete it or choose a new ACTIONQ_QUEUE to change it)."
        ),
    )
    direct_enqueue: bool = Field(
        True,
        description=(
            "Redis broker shared with the state store: push an action's Celery message in "
            "the same Lua call that makes it runnable (atomic, one round trip)."
        ),
    )
    key_prefix: str = Field(
        "actionq",
        pattern=r"^[^{}]+$",
        description="Prefix of every Redis key actionq writes (no braces).",
    )
    replica_acks: int | None = Field(
        None,
        ge=0,
        description=(
            "Replicas each write to the store waits for (WAIT) before it counts as done. "
            "Unset: 1 where the primary has a replica, else 0. 0: no wait "
            "(docs/reliability.md, 'Replica acks')."
        ),
    )
    replica_ack_timeout_ms: int = Field(
        1000,
        gt=0,
        description=(
            "How long a write waits for its replica acks; past it the write stands on the "
            "primary alone, with a warning in the log."
        ),
    )
    queue: str = Field("actionq", description="Celery queue that action tasks are sent to.")
    api_keys: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Server: the keys the HTTP API accepts, comma-separated (required to "
        "serve it; `actionq up` makes one). Clients send one of them as `ACTIONQ_API_KEY`.",
    )
    api_host: str = Field("127.0.0.1", description="Address the HTTP API listens on.")
    api_port: int = Field(8000, ge=0, le=65535, description="Port the HTTP API listens on.")
    api_max_body_bytes: int = Field(
        1024 * 1024,
        gt=0,
        description="Largest request body the API accepts (larger: 413), "
        "and largest WebSocket frame (larger: close 1009).",
    )
    api_max_streams: int = Field(
        1000,
        gt=0,
        description="Most event streams (SSE and WebSockets) the API serves at once, each "
        "holding a Redis connection (over: 503; a WebSocket is closed with 1013).",
    )
    api_max_streams_per_key: int = Field(
        100,
        gt=0,
        description="Most event streams open at once per API key (over: 429; a WebSocket "
        "is closed with 1013).",
    )
    session_ttl_seconds: int = Field(
        3600,
        gt=0,
        le=30 * 86_400,
        description="How long a browser session (the cookie POST /api/session sets) "
        "lasts; it also ends when its key leaves ACTIONQ_API_KEYS.",
    )
    api_url: str | None = Field(
        None,
        description="Client commands: the API to talk to (default: the one `actionq up` "
        "started in ./.actionq, else http://127.0.0.1:8000).",
    )
    api_key: str | None = Field(
        None,
        description="Clients (`actionq conversations`, `actionq actions`): the one key they "
        "send (default: the one `actionq up` wrote in ./.actionq, else the first of "
        "ACTIONQ_API_KEYS).",
    )

    worker_lease_seconds: float = Field(
        3.0, gt=0, description="A worker whose heartbeat is older than this is dead."
    )
    heartbeat_interval: float = Field(1.0, gt=0, description="How often a worker renews its lease.")
    worker_stall_seconds: float = Field(
        30.0,
        gt=0,
        description="A worker whose event loop has not ticked for this long stops renewing "
        "its lease (its heartbeat is a thread, so slow work alone never expires it).",
    )
    sweep_interval: float = Field(
        1.0, gt=0, description="How often a worker looks for claims of dead workers."
    )
    turn_resend_seconds: float = Field(
        30.0,
        ge=0,
        description=(
            "A running conversation whose turn (its pending action or queued agent step) "
            "waited this long is sent again (its message may have been lost), then after "
            "twice as long, and so on (a duplicate cannot run twice). 0: never."
        ),
    )
    outcome_retry_seconds: float = Field(
        35.0,
        gt=0,
        description="How long a task keeps retrying to record its action's outcome while "
        "Redis is unreachable; past it the action is errored (abandoned) once Redis is back.",
    )
    recover_on_start: bool = Field(
        True, description="Error the actions of dead workers when a worker starts."
    )
    pool_maintain_interval: float = Field(
        0.25,
        gt=0,
        description="How often the worker parent reaps dead pool children (Celery's is 5 s).",
    )

    task_events: bool = Field(
        True, description="Send Celery task events (Flower needs them; off saves ~0.3 ms/action)."
    )
    visibility_timeout: int = Field(
        3600, gt=0, description="Redis broker: seconds before an unacked message is redelivered."
    )
    unacked_restore_interval: int = Field(
        10, gt=0, description="Redis broker: seconds between scans for expired unacked messages."
    )
    action_time_limit: float = Field(
        3600.0, gt=0, description="Hard limit for one action; past it the action errors."
    )
    max_arguments_bytes: int = Field(
        256 * 1024, gt=0, description="Largest tool-call arguments (as JSON) accepted on submit."
    )
    max_arguments_depth: int = Field(
        32, gt=0, description="Deepest nesting of tool-call arguments accepted on submit."
    )
    max_output_bytes: int = Field(
        64 * 1024, gt=0, description="Tool output beyond this is cut, with a visible marker."
    )
    output_tail_bytes: int = Field(
        2048,
        ge=0,
        description="A crashed `terminal` command's last output (bytes, stdout and stderr as "
        "they interleaved) kept in its AgentErrorEvent (`detail.output_tail`, and in the "
        "error text the model reads); 0 = none.",
    )
    output_spool_dir: str | None = Field(
        None,
        description="Folder (0700) of the files `terminal` commands write their output to "
        "while they run (one per action, deleted when it ends), so a crash still finds the "
        "last output. Unset: <temp folder>/actionq-output-<uid>; `actionq up` sets "
        "<data folder>/output-spool.",
    )
    action_memory_limit_mb: int = Field(
        2048,
        ge=0,
        description="Memory cap (MiB) of each `terminal` command: its cgroup's limit where the "
        "worker may make cgroups (a command killed by it is a `memory_limit` crash), else "
        "RLIMIT_AS (the command's allocations fail); 0 = no cap.",
    )
    quarantine_threshold: int = Field(
        2, ge=1, description="Crashes of one fingerprint after which a retry needs force."
    )
    tool_modules: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Extra modules to import in workers; they register tools with @tool.",
    )
    embedded_appendfsync: Literal["everysec", "always"] = Field(
        "everysec",
        description="`actionq up`'s embedded server: fsync the append-only file every "
        "second, or on every write (closes the power-loss window, slower).",
    )
    embedded_maxmemory: Annotated[str, Field(pattern=r"^[0-9]+([kmg]b?)?$")] = Field(
        "1gb",
        description="`actionq up`'s embedded server: memory cap (valkey units, e.g. 512mb; "
        "0 = none). Past it writes fail with an error; nothing is ever evicted.",
    )
    workdir: str | None = Field(
        None,
        description="Workspace root: each conversation's tools run in, and the file tools "
        "are confined to, its own folder `<root>/<conversation id>` (0700, made on first "
        "use). Unset: $XDG_DATA_HOME/actionq/workspace, else "
        "~/.local/share/actionq/workspace; `actionq up`: <data folder>/workspace. Never "
        "the data folder itself.",
    )
    data_dir: str | None = Field(
        None,
        description="actionq's own data folder (keys, passwords, server data), set by "
        "`actionq up`; tools never run in it and the file tools refuse every path in it.",
    )
    secret_key_file: str | None = Field(
        None,
        description="A file holding the Fernet key that seals the LLM API keys clients "
        "send (the API seals, agent workers open; tool workers and tools never get it). "
        "Refused if group or others may read it. `actionq up`: <data folder>/secret-key, "
        "made on first start. Unset: no LLM key can be stored.",
    )
    secret_key_file_old: str | None = Field(
        None,
        description="Key rotation: the previous key file. Secrets sealed with it still "
        "open; new ones are sealed with ACTIONQ_SECRET_KEY_FILE.",
    )

    tool_env_allow: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated extra environment variables (names, or patterns like "
        "AWS_*) that `terminal` commands get besides PATH, HOME, LANG, LC_*, TERM, TZ, USER, "
        "LOGNAME, SHELL, TMPDIR. A pattern never passes secret-looking names (*TOKEN*, "
        "*SECRET*, *PASSWORD*, *API_KEY*); list those by name. ACTIONQ_* never passes.",
    )
    tool_cgroups: bool = Field(
        True,
        description="Run each `terminal` command in its own cgroup v2 (where the worker may "
        "create one) so that all it started, setsid or not, is killed when it ends.",
    )
    file_tool_timeout: float = Field(
        30.0, gt=0, description="Seconds a file tool (read, write, edit) may take before it errors."
    )

    agent_queue: str = Field(
        "actionq.agent",
        description="Celery queue of agent steps (model calls), served by "
        "a thread pool: a step mostly waits on the model.",
    )
    agent_concurrency: int = Field(
        64,
        gt=0,
        description="`actionq up` and `actionq worker --agent`: agent steps one "
        "worker runs at once (threads).",
    )
    agent_max_iterations: int = Field(
        500,
        gt=0,
        description="Default model steps per run before the run ends with "
        "`MaxIterationsReached` (a conversation may set its own).",
    )
    agent_history_events: int = Field(
        200,
        ge=10,
        description="The newest events a step reads to build the model's "
        "messages (cut at a safe point; the first user message is always kept).",
    )
    agent_step_attempts: int = Field(
        3,
        ge=1,
        description="Deliveries of one step whose worker died before the "
        "conversation goes to `error` (a step is safe to run again; a tool call never is).",
    )
    model: str | None = Field(
        None,
        description="The `default` model profile's litellm model name, e.g. "
        "openai/gpt-4o-mini (profiles file: ACTIONQ_MODEL_PROFILES_FILE).",
    )
    model_base_url: str | None = Field(
        None, description="The `default` profile's API base URL (an OpenAI-compatible server)."
    )
    model_api_key_env: str = Field(
        "OPENAI_API_KEY",
        description="The environment variable that holds the `default` "
        "profile's API key, read by agent workers only; never shown, logged or given to tools.",
    )
    model_profiles_file: str | None = Field(
        None,
        description="A JSON file of named model profiles: "
        '{"name": {"model": ..., "base_url": ..., "api_key_env": ...}}.',
    )
    model_timeout: float = Field(120.0, gt=0, description="Seconds one model call may take.")
    model_retries: int = Field(
        4,
        ge=0,
        description="Retries of a model call that failed with a rate limit, a 5xx "
        "or a connection error, with exponential back-off.",
    )
    model_retry_base_seconds: float = Field(
        2.0, gt=0, description="First back-off of a model retry (doubles each time, max 60 s)."
    )

    archive_after_seconds: float = Field(
        0,
        ge=0,
        description="Retention: a conversation whose status is one of ACTIONQ_ARCHIVE_STATUSES "
        "and that has not changed for this many seconds (e.g. 2592000 = 30 days) is copied to "
        "ACTIONQ_ARCHIVE_URL, checked, then removed from Redis; the API still serves it, "
        "read-only. 0 = never (the default; it needs ACTIONQ_ARCHIVE_URL).",
    )
    archive_statuses: Annotated[list[ArchivableStatus], NoDecode] = Field(
        default_factory=lambda: list[ArchivableStatus](["finished"]),
        description="Comma-separated statuses that archival takes: finished, and by choice "
        "idle, error, paused, stuck (never running or waiting_for_confirmation).",
    )
    archive_url: str | None = Field(
        None,
        description="Where archived conversations go: postgresql://… (psycopg 3; its own "
        "schema, ACTIONQ_ARCHIVE_PG_SCHEMA) or file:///folder (or a path): one JSONL file per "
        "conversation. Set without ACTIONQ_ARCHIVE_AFTER_SECONDS, archives are read, none written.",
    )
    archive_pg_schema: Annotated[str, Field(pattern=r"^[a-z_][a-z0-9_]{0,62}$")] = Field(
        "actionq",
        description="PostgreSQL archive: the schema of its tables (made if missing).",
    )
    archive_batch: int = Field(
        100, gt=0, description="Archival: most conversations one sweep looks at."
    )
    archive_interval: float = Field(
        60.0, gt=0, description="Archival: seconds between sweeps (one process at a time)."
    )

    @field_validator(
        "api_keys", "tool_modules", "tool_env_allow", "archive_statuses", mode="before"
    )
    @classmethod
    def _comma_list(cls, value: Any) -> Any:
        return _split_commas(value)

    @field_validator("tool_env_allow")
    @classmethod
    def _no_own_variables(cls, names: list[str]) -> list[str]:
        own = [name for name in names if name.upper().startswith(ENV_PREFIX)]
        if own:
            raise ValueError(
                f"ACTIONQ_TOOL_ENV_ALLOW may not pass actionq's own settings ({', '.join(own)})"
            )
        return names

    @field_validator("archive_url")
    @classmethod
    def _archive_url_scheme(cls, url: str | None) -> str | None:
        scheme = url.split("://", 1)[0].lower() if url and "://" in url else ""
        if scheme not in ("", "postgresql", "postgres", "file"):
            raise ValueError("must be postgresql://…, file:///folder or a path")
        return url or None

    @model_validator(mode="after")
    def _check_intervals(self) -> Settings:
        if self.heartbeat_interval >= self.worker_lease_seconds:
            raise ValueError(
                "ACTIONQ_HEARTBEAT_INTERVAL must be shorter than ACTIONQ_WORKER_LEASE_SECONDS, "
                "or live workers would look dead"
            )
        if self.archive_after_seconds > 0 and not self.archive_url:
            raise ValueError(
                "ACTIONQ_ARCHIVE_AFTER_SECONDS needs ACTIONQ_ARCHIVE_URL (where the archived "
                "conversations go)"
            )
        if self.worker_stall_seconds <= self.heartbeat_interval:
            raise ValueError(
                "ACTIONQ_WORKER_STALL_SECONDS must be longer than ACTIONQ_HEARTBEAT_INTERVAL"
            )
        return self

    @property
    def workspace_root(self) -> Path:
        """Where the conversations' workspaces are (``ACTIONQ_WORKDIR``, else
        the per-user default), absolute; ``actionq.tools.workspace`` checks
        and creates it."""
        if self.workdir:
            return Path(self.workdir).expanduser().absolute()
        return default_workspace_root()

    @model_validator(mode="after")
    def _check_store_url(self) -> Settings:
        from actionq.store_url import parse_store_url

        address = parse_store_url(self.redis_url)
        if address.topology == "cluster" and self.broker_url is None:
            raise ValueError(
                "ACTIONQ_REDIS_URL is a Redis Cluster, which kombu cannot use as a broker: "
                "set ACTIONQ_BROKER_URL (amqp://... for RabbitMQ, or a separate redis://)"
            )
        return self

    @property
    def effective_broker_url(self) -> str:
        """The broker: ``broker_url``, else the store's Redis (a Sentinel
        store in kombu's form, ``sentinel://host:port;sentinel://...``)."""
        if self.broker_url:
            return self.broker_url
        from actionq.store_url import kombu_sentinel_url, parse_store_url

        address = parse_store_url(self.redis_url)
        if address.topology == "sentinel":
            return kombu_sentinel_url(address)
        return self.redis_url

    @property
    def effective_broker_transport(self) -> str | None:
        if self.broker_transport is not None:
            return self.broker_transport
        if self.effective_broker_url.startswith("redis://"):
            return OUR_TRANSPORT
        return None


def default_workspace_root() -> Path:
    """$XDG_DATA_HOME/actionq/workspace, else ~/.local/share/actionq/workspace:
    the user's own data, never the folder a worker happens to start in (a
    checkout, whose files a model should not edit by default)."""
    xdg = os.environ.get("XDG_DATA_HOME", "")
    # The XDG spec: a relative path is invalid and is to be ignored.
    base = Path(xdg) if os.path.isabs(xdg) else Path.home() / ".local" / "share"
    return base / "actionq" / "workspace"


def _unknown_env_names() -> list[str]:
    known = {ENV_PREFIX + name.upper() for name in Settings.model_fields}
    return sorted(k for k in os.environ if k.startswith(ENV_PREFIX) and k not in known)


def _unknown_names_message(unknown: list[str]) -> str:
    # Compared without the prefix, which every name shares and would make
    # anything look close.
    known = [name.upper() for name in Settings.model_fields]
    described = []
    for name in unknown:
        close = difflib.get_close_matches(name.removeprefix(ENV_PREFIX), known, n=1)
        described.append(f"{name} (did you mean {ENV_PREFIX}{close[0]}?)" if close else name)
    return (
        f"unknown setting{'s' if len(unknown) > 1 else ''} {', '.join(described)}; "
        "`actionq config --markdown` lists them all"
    )


# Never echoed back in an error: a typo in one of these may still be a secret.
_SECRET_FIELDS = {"api_keys", "api_key", "redis_url", "broker_url", "archive_url"}


def _validation_message(error: ValidationError) -> str:
    """One line: each bad variable and what is wrong with it (no pydantic URLs)."""
    problems = []
    for detail in error.errors(include_url=False):
        message = str(detail["msg"]).removeprefix("Value error, ")
        field = str(detail["loc"][0]) if detail["loc"] else None
        if field is None:  # a check across settings: its message names them
            problems.append(message)
        elif field in _SECRET_FIELDS:
            problems.append(f"{ENV_PREFIX}{field.upper()}: {message}")
        else:
            problems.append(f"{ENV_PREFIX}{field.upper()}={detail['input']!r}: {message}")
    return "invalid setting: " + "; ".join(problems)


def load_settings(**overrides: Any) -> Settings:
    """Read settings from the environment; a clear error for typos and bad values."""
    unknown = _unknown_env_names()
    if unknown:
        raise ConfigurationError(_unknown_names_message(unknown))
    try:
        return Settings(**overrides)
    except ValidationError as e:
        raise ConfigurationError(_validation_message(e)) from e
    except ValueError as e:  # pydantic-settings' own parse errors
        first_line = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ConfigurationError(f"invalid actionq settings: {first_line}") from e


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (read once)."""
    return load_settings()


def settings_markdown_table() -> str:
    """The settings table of docs/configuration.md (a test keeps them equal)."""
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for name, field in Settings.model_fields.items():
        default = field.default if field.default_factory is None else field.default_factory()  # type: ignore[call-arg]
        if isinstance(default, list):
            default = ",".join(default) or "(empty)"
        rows.append(f"| `{ENV_PREFIX}{name.upper()}` | `{default}` | {field.description} |")
    return "\n".join(rows)
