"""Fixtures: a Redis-compatible server the session starts itself, a fresh
database per test (flushed only because this session created the server), and
real Celery worker processes.

Each test folder is a marker saying what its tests need (pyproject.toml lists
them): ``unit`` nothing, ``store`` a real valkey, ``worker`` real prefork
workers, ``agent`` the agent loop (a fake model over HTTP, real workers),
``api`` a real ``actionq up`` over HTTP, ``local`` ``actionq up`` and
the CLI as users run them, ``openhands`` OpenHands' own client (openhands-sdk)
in a Python >= 3.12 venv of its own (tests/openhands/conftest.py). A unit
test that starts a process or opens a connection fails (an audit hook
watches its setup and call)."""

from __future__ import annotations

import contextlib
import itertools
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from actionq.service import ActionQ
from actionq.settings import Settings
from tests.helpers import ROOT, ValkeyServer, WorkerProcess
from tests.topology import valkey_cluster, valkey_sentinel  # noqa: F401 (fixtures for every test)
from tests.up_process import UpProcess, start_up, stop_up

_db_numbers = itertools.count(1)

TESTS = Path(__file__).resolve().parent
LAYERS = ("unit", "store", "worker", "agent", "api", "local", "openhands", "console")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test by its folder; a test outside the folders is an error,
    or ``-m unit`` and the like would silently leave it out."""
    for item in items:
        parts = item.path.relative_to(TESTS).parts if item.path.is_relative_to(TESTS) else ()
        if len(parts) < 2 or parts[0] not in LAYERS:
            raise pytest.UsageError(
                f"{item.nodeid}: put the test module in one of tests/{{{','.join(LAYERS)}}}/ "
                "(docs/testing.md says which)"
            )
        item.add_marker(parts[0])


# The unit test being set up or run, if any: it may start no process and open
# no connection (a server, a worker, `actionq up`: each needs one of these).
_running_unit_test: str | None = None
_NOT_IN_UNIT_TESTS = frozenset(
    {
        *("subprocess.Popen", "os.posix_spawn", "os.fork", "os.forkpty", "os.exec", "os.system"),
        "socket.connect",
    }
)


def _refuse_in_unit_tests(event: str, args: tuple[Any, ...]) -> None:
    if _running_unit_test is not None and event in _NOT_IN_UNIT_TESTS:
        raise RuntimeError(
            f"{_running_unit_test}: a unit test may not {event} {args[:2]!r}; "
            "move it to tests/store, tests/worker, tests/api or tests/local"
        )


def pytest_configure(config: pytest.Config) -> None:
    sys.addaudithook(_refuse_in_unit_tests)  # cannot be removed: it checks the flag


@contextlib.contextmanager
def _unit_test_guard(item: pytest.Item) -> Iterator[None]:
    global _running_unit_test
    _running_unit_test = item.nodeid if item.get_closest_marker("unit") else None
    try:
        yield
    finally:
        _running_unit_test = None


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Iterator[None]:
    # Not teardown: the last test of a run tears the session's server down.
    with _unit_test_guard(item):
        return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    with _unit_test_guard(item):
        return (yield)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UpProcess]:
    """A real ``actionq up`` for the module's tests (a module that needs other
    settings defines its own ``stack``)."""
    base = tmp_path_factory.mktemp("up")
    up = start_up(base / ".actionq", base / "up.log")
    yield up
    stop_up(up)


@pytest.fixture(scope="session")
def valkey_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ValkeyServer]:
    server = ValkeyServer(tmp_path_factory.mktemp("valkey"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(valkey_server: ValkeyServer) -> Iterator[str]:
    db = next(_db_numbers)
    url = valkey_server.url(db)
    yield url
    client = redis.Redis.from_url(url)
    client.flushdb()  # our own server, our own database number
    client.close()


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """The workspace root (``ACTIONQ_WORKDIR``); a conversation's tools run in
    its own folder in it, ``conversation_workspace(settings, cid)``."""
    path = tmp_path / "work"
    path.mkdir()
    return path


@pytest.fixture
def settings_env(redis_url: str, workdir: Path) -> dict[str, str]:
    """ACTIONQ_* settings shared by the test process and its workers."""
    return {
        "ACTIONQ_REDIS_URL": redis_url,
        "ACTIONQ_TOOL_MODULES": "tests.tools_for_tests",
        "ACTIONQ_WORKDIR": str(workdir),
        "ACTIONQ_VISIBILITY_TIMEOUT": "5",
        "ACTIONQ_UNACKED_RESTORE_INTERVAL": "1",
        "ACTIONQ_WORKER_LEASE_SECONDS": "3",
        "ACTIONQ_HEARTBEAT_INTERVAL": "0.5",
    }


@pytest.fixture
def settings(settings_env: dict[str, str]) -> Settings:
    return Settings(**{k.removeprefix("ACTIONQ_").lower(): v for k, v in settings_env.items()})  # type: ignore[arg-type]


@pytest.fixture
def aq(settings: Settings) -> Iterator[ActionQ]:
    with ActionQ(settings) as client:
        yield client


WorkerFactory = Callable[..., WorkerProcess]


@pytest.fixture
def start_worker(
    settings_env: dict[str, str], tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[WorkerFactory]:
    """Start a real prefork worker: ``start_worker("w1", concurrency=1, **env)``;
    ``agent=True``: an agent-step worker (thread pool)."""
    started: list[WorkerProcess] = []
    names = itertools.count(1)

    def start(
        name: str | None = None,
        concurrency: int = 1,
        wait: bool = True,
        agent: bool = False,
        **env: str,
    ) -> WorkerProcess:
        base = {k: v for k, v in os.environ.items() if not k.startswith("ACTIONQ_")}
        full_env = base | settings_env | env | {"PYTHONPATH": str(ROOT)}
        worker = WorkerProcess(
            name or f"w{next(names)}", full_env, tmp_path, concurrency, agent=agent
        )
        started.append(worker.start())
        return worker.wait_ready() if wait else worker

    yield start
    for worker in started:
        worker.stop(timeout=5)
    failed = getattr(request.node, "report_call", None)
    if failed is not None and failed.failed:
        for worker in started:
            print(f"\n===== log of worker {worker.name} =====\n{worker.log()[-6000:]}")
