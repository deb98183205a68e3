"""actionq as users install it (issue 13): one top-level package that does not
collide with a user's project, and imports with no side effects.

What these tests prove:

- **The wheel**: built from this repository's pyproject.toml by pip
  (``--no-deps --no-build-isolation``, no index) into a fresh venv, it installs
  ``actionq/`` (with ``actionq/tasks/`` mapped from tasks/ and the Lua scripts)
  and nothing else at the top level of site-packages: no ``app``, no ``tasks``.
- **A user's project keeps its own names**: in a project that has its own
  ``app/`` package (FastAPI's usual name), its own ``tasks.py`` (Celery's) and
  its own tool module, ``celery -A actionq worker`` started there runs the
  user's tool and a ``terminal`` command submitted with ``from actionq import
  ActionQ``; both end with an ObservationEvent, the worker logs no error, and
  ``from app import ActionQ`` still gives the user's object, in the client and
  inside the worker.
- **Import has no side effects**: ``import actionq.models`` loads no Celery,
  kombu or billiard module; ``import actionq`` builds no Celery app and reads
  no setting, so it works (as does ``actionq --help``) with a mistyped
  ``ACTIONQ_*`` variable, which ``actionq config`` then reports in one line
  (exit 1, no traceback); importing ``actionq``, ``actionq.service``,
  ``actionq.api`` and ``actionq.cli.main`` connects no Celery signal handler.
- **In a worker, each module is loaded once**: inside a pool child of a real
  worker started from the checkout (where the symlinks ``actionq -> app`` and
  ``app/tasks -> ../tasks`` would allow it), no module is loaded under the old
  names ``app``/``tasks`` or from the same file under two names; one
  task_failure handler of actionq is connected (actionq's own function), and
  one Celery app holds ``actionq.run_action``.
"""

from __future__ import annotations

import csv
import importlib.metadata
import json
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from actionq.models import TERMINAL_EVENT_KINDS
from actionq.service import ActionQ
from tests.helpers import ROOT, WorkerProcess, wait_for

# What pip needs to build the wheel: the build configuration and the two
# source trees it maps (app/ -> actionq, tasks/ -> actionq.tasks), with the
# checkout's symlinks, so that the test also proves they add nothing.
BUILD_INPUTS = ("pyproject.toml", "README.md", "app", "tasks", "actionq")
WORKER_SIDE_MODULES = ("celery", "kombu", "billiard")
PURELIB = "import sysconfig; print(sysconfig.get_paths()['purelib'])"


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without the test run's ACTIONQ_* settings and PYTHONPATH."""
    keep = {k: v for k, v in os.environ.items() if not k.startswith("ACTIONQ_")}
    keep.pop("PYTHONPATH", None)
    return keep | extra


def run(
    argv: list[str], env: dict[str, str], cwd: Path, timeout: float = 60.0
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
    )


def run_python(code: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """This venv's Python on ``code``, with this checkout first on the path."""
    return run([sys.executable, "-c", code], clean_env(PYTHONPATH=str(ROOT), **env), cwd)


def checked(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, f"exit {result.returncode}:\n{result.stdout}\n{result.stderr}"
    return result.stdout


# --- the wheel in a fresh venv, used from a user's project -----------------


def build_user_venv(tmp_path: Path) -> tuple[Path, Path]:
    """A venv with actionq installed from a wheel pip builds from this
    repository; returns (its python, its site-packages)."""
    setuptools = importlib.metadata.version("setuptools")
    assert int(setuptools.split(".")[0]) >= 77, (
        f"setuptools {setuptools} cannot build actionq (pyproject.toml's build-system wants "
        ">=77); run `.venv/bin/pip install -e '.[dev]'` again"
    )
    # Built from a copy: pip builds in the source tree, and in the checkout
    # it would leave build/ and egg-info behind (and could pack stale files
    # from an old build/lib).
    source = tmp_path / "actionq-source"
    source.mkdir()
    for name in BUILD_INPUTS:
        origin = ROOT / name
        if origin.is_symlink():
            (source / name).symlink_to(os.readlink(origin))
        elif origin.is_dir():
            shutil.copytree(
                origin, source / name, symlinks=True, ignore=shutil.ignore_patterns("__pycache__")
            )
        else:
            shutil.copy2(origin, source / name)
    venv = tmp_path / "user-venv"
    checked(run([sys.executable, "-m", "venv", "--without-pip", str(venv)], clean_env(), tmp_path))
    python = venv / "bin" / "python"
    site_packages = Path(checked(run([str(python), "-c", PURELIB], clean_env(), tmp_path)).strip())
    # The dependencies without downloading them: a .pth line puts this venv's
    # site-packages on the new venv's path, after its own site-packages. (A
    # .pth adds a folder, not the .pth files in it, so the editable install of
    # actionq there stays inactive; pip also leaves it alone, "outside
    # environment".) pip and setuptools come from there too.
    (site_packages / "zz_actionq_test_dependencies.pth").write_text(
        sysconfig.get_paths()["purelib"] + "\n"
    )
    pip_install = [str(python), "-m", "pip", "install", "--no-deps", "--no-build-isolation"]
    pip_install += ["--no-index", "--disable-pip-version-check", "--quiet", str(source)]
    checked(run(pip_install, clean_env(), tmp_path, timeout=180))
    return python, site_packages


def installed_files(site_packages: Path) -> list[str]:
    (dist_info,) = site_packages.glob("actionq-*.dist-info")
    with (dist_info / "RECORD").open(newline="") as record:
        return [row[0] for row in csv.reader(record) if row]


def source_files(folder: Path, package: str) -> set[str]:
    """``folder``'s .py files named as the wheel installs them under ``package``
    (os.walk does not enter the symlink app/tasks)."""
    found = set()
    for directory, _, names in os.walk(folder):
        relative = Path(directory).relative_to(folder)
        found |= {(Path(package) / relative / n).as_posix() for n in names if n.endswith(".py")}
    return found


def expected_modules() -> set[str]:
    """What pyproject's package-dir mapping installs: app/ as actionq/, tasks/ as actionq/tasks/."""
    return source_files(ROOT / "app", "actionq") | source_files(ROOT / "tasks", "actionq/tasks")


USER_APP = '''\
"""The user's own web app, under FastAPI's usual name."""

ActionQ = "mine"
'''

USER_TASKS = '''\
"""The user's own Celery tasks module (Celery's usual layout)."""


def add(x: int, y: int) -> int:
    return x + y
'''

USER_TOOLS = '''\
"""The user's own tool module (ACTIONQ_TOOL_MODULES=mytools)."""

from pydantic import BaseModel

import actionq
import app
import tasks
from actionq import ToolContext, tool


class ShoutArgs(BaseModel):
    text: str


@tool("shout", ShoutArgs)
def shout(args: ShoutArgs, ctx: ToolContext) -> dict:
    """Upper-case the text; say which app and tasks modules this process sees."""
    return {
        "text": args.text.upper(),
        "app_actionq": app.ActionQ,
        "app_file": app.__file__,
        "tasks_add": tasks.add(2, 3),
        "actionq_file": actionq.__file__,
    }
'''

# Run with `python -c` in the user's project, so its folder is on the path
# as it is for a user's script.
USER_CLIENT = """\
import json

import actionq
from actionq import ActionQ
from actionq.models import TERMINAL_EVENT_KINDS

with ActionQ() as aq:
    conversation = aq.create_conversation()
    calls = [("shout", {"text": "hello"}), ("terminal", {"command": "echo from-terminal"})]
    actions = [aq.submit_action(conversation.id, name, args) for name, args in calls]
    for action in actions:
        aq.wait_for_action(action.id, timeout=30)
    events = aq.list_events(conversation.id).items

import tasks
from app import ActionQ as users_own

print(json.dumps({
    "outcomes": [
        {"kind": e.kind, "tool": e.tool_name, "observation": getattr(e, "observation", None),
         "error": getattr(e, "error", None)}
        for e in events if e.kind in TERMINAL_EVENT_KINDS
    ],
    "users_own": users_own,
    "tasks_file": tasks.__file__,
    "actionq_file": actionq.__file__,
}))
"""


def write_user_project(folder: Path) -> Path:
    (folder / "app").mkdir(parents=True)
    (folder / "app" / "__init__.py").write_text(USER_APP)
    (folder / "tasks.py").write_text(USER_TASKS)
    (folder / "mytools.py").write_text(USER_TOOLS)
    return folder


class UserWorker:
    """``celery -A actionq worker`` in the user's project, from the user's venv."""

    def __init__(self, python: Path, project: Path, env: dict[str, str], log_path: Path) -> None:
        # `python -m celery` is the venv's `celery` script: celery itself is
        # on the path through the .pth, its script stayed in the other venv.
        self.argv = [str(python), "-m", "celery", "-A", "actionq", "worker"]
        self.argv += ["--pool", "prefork", "--concurrency", "1", "--without-gossip"]
        self.argv += ["--without-mingle", "--without-heartbeat", "--loglevel", "INFO"]
        self.argv += ["--hostname", "user-project@%h"]
        self.project = project
        self.env = env
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def start(self, timeout: float = 30.0) -> None:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.argv,
                cwd=self.project,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

        def ready() -> bool:
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError(f"the worker exited early:\n{self.log()[-3000:]}")
            return " ready." in self.log()

        wait_for(ready, timeout, 0.1, "the user's worker to be ready")

    def stop(self, timeout: float = 15.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)


@pytest.fixture
def user_worker(tmp_path: Path) -> Iterator[Callable[..., UserWorker]]:
    started: list[UserWorker] = []

    def start(python: Path, project: Path, env: dict[str, str]) -> UserWorker:
        worker = UserWorker(python, project, env, tmp_path / "user-worker.log")
        started.append(worker)
        worker.start()
        return worker

    yield start
    for worker in started:
        worker.stop()


def test_wheel_installs_only_actionq_and_works_in_a_users_project(
    tmp_path: Path, redis_url: str, user_worker: Callable[..., UserWorker]
) -> None:
    python, site_packages = build_user_venv(tmp_path)

    files = installed_files(site_packages)
    top_level = {path.split("/")[0] for path in files if not path.startswith("..")}
    assert top_level == {"actionq", next(site_packages.glob("actionq-*.dist-info")).name}
    assert not (site_packages / "app").exists()
    assert not (site_packages / "tasks").exists()
    # Every module of app/ and tasks/ once, under actionq/, and nothing else.
    assert {f for f in files if f.endswith(".py")} == expected_modules()
    assert any(f.startswith("actionq/store/lua/") and f.endswith(".lua") for f in files)
    console = {f.rsplit("/", 1)[1] for f in files if f.startswith("actionq/api/console/static/")}
    assert console == {"index.html", "console.js", "console.css"}

    project = write_user_project(tmp_path / "user-project")
    env = clean_env(
        ACTIONQ_REDIS_URL=redis_url,
        ACTIONQ_TOOL_MODULES="mytools",
        ACTIONQ_WORKDIR=str(tmp_path / "work"),
    )
    (tmp_path / "work").mkdir()
    worker = user_worker(python, project, env)

    client = run([str(python), "-c", USER_CLIENT], env, project, timeout=90)
    report = json.loads(checked(client))

    installed = str(site_packages / "actionq" / "__init__.py")
    assert report["actionq_file"] == installed  # the wheel, not the checkout
    assert report["users_own"] == "mine"
    assert report["tasks_file"] == str(project / "tasks.py")
    outcomes = {outcome["tool"]: outcome for outcome in report["outcomes"]}
    assert {tool: o["kind"] for tool, o in outcomes.items()} == {
        "shout": "ObservationEvent",
        "terminal": "ObservationEvent",
    }, report["outcomes"]
    shout = outcomes["shout"]["observation"]
    # Inside the worker too, `app` and `tasks` are the user's, actionq the wheel.
    assert shout["text"] == "HELLO"
    assert shout["app_actionq"] == "mine"
    assert shout["app_file"] == str(project / "app" / "__init__.py")
    assert shout["tasks_add"] == 5
    assert shout["actionq_file"] == installed
    terminal = outcomes["terminal"]["observation"]
    assert (terminal["exit_code"], terminal["output"].strip()) == (0, "from-terminal")

    worker.stop()
    log = worker.log()
    problems = [line for line in log.splitlines() if "ERROR" in line or "CRITICAL" in line]
    assert problems == [] and "Traceback" not in log, log[-4000:]


# --- importing has no side effects ------------------------------------------


def imported_modules(importtime_stderr: str) -> set[str]:
    """Module names from ``python -X importtime`` lines
    (``import time: self [us] | cumulative | imported package``)."""
    names = set()
    for line in importtime_stderr.splitlines():
        if line.startswith("import time:") and line.count("|") == 2:
            name = line.rsplit("|", 1)[1].strip()
            if name != "imported package":
                names.add(name)
    return names


def test_importing_the_models_loads_no_worker_side_module(tmp_path: Path) -> None:
    result = run(
        [sys.executable, "-X", "importtime", "-c", "import actionq.models"],
        clean_env(PYTHONPATH=str(ROOT)),
        tmp_path,
    )
    checked(result)
    modules = imported_modules(result.stderr)
    assert "actionq.models" in modules  # the output was parsed
    worker_side = sorted(m for m in modules if m.split(".")[0] in WORKER_SIDE_MODULES)
    assert worker_side == []


IMPORT_REPORT = """\
import json, sys
import actionq
from actionq.settings import get_settings
settings_read = get_settings.cache_info().currsize
from celery import _state
print(json.dumps({"apps": len(_state._get_active_apps()), "settings_read": settings_read}))
"""


def test_import_builds_no_app_and_reads_no_setting(tmp_path: Path) -> None:
    # A mistyped setting must not break `import actionq`: nothing reads it yet.
    report = json.loads(checked(run_python(IMPORT_REPORT, tmp_path, ACTIONQ_FOO="1")))
    assert report == {"apps": 0, "settings_read": 0}


def test_help_works_and_config_names_a_mistyped_setting(tmp_path: Path) -> None:
    actionq_script = str(Path(sys.executable).with_name("actionq"))
    env = clean_env(PYTHONPATH=str(ROOT), ACTIONQ_FOO="1")

    help_result = run([actionq_script, "--help"], env, tmp_path)
    assert help_result.returncode == 0, help_result.stderr
    assert "Usage" in help_result.stdout

    config = run([actionq_script, "config"], env, tmp_path)
    assert config.returncode == 1
    output = config.stdout + config.stderr
    assert "Traceback" not in output
    assert len(output.strip().splitlines()) == 1, output
    assert "ACTIONQ_FOO" in output


SIGNAL_REPORT = """\
import json, weakref
import actionq, actionq.service, actionq.api, actionq.cli.main
from celery import signals
from celery.utils.dispatch.signal import Signal
receivers = {}
for name, value in vars(signals).items():
    if isinstance(value, Signal) and value.receivers:
        functions = [r() if isinstance(r, weakref.ReferenceType) else r for _, r in value.receivers]
        receivers[name] = [f"{getattr(f, '__module__', '?')}.{getattr(f, '__qualname__', '?')}"
                           for f in functions]
print(json.dumps(receivers))
"""


def test_import_connects_no_signal_handler(tmp_path: Path) -> None:
    receivers = json.loads(checked(run_python(SIGNAL_REPORT, tmp_path)))
    assert receivers.get("worker_init", []) == []
    assert receivers.get("task_failure", []) == []
    ours = {
        name: found
        for name, found in receivers.items()
        if any(f.split(".")[0] in ("actionq", "app", "tasks") for f in found)
    }
    assert ours == {}


# --- in a worker, each module is loaded once --------------------------------


def observation_of(aq: ActionQ, conversation_id: str, action_id: str) -> dict[str, Any]:
    events = aq.list_events(conversation_id).items
    (end,) = [e for e in events if e.kind in TERMINAL_EVENT_KINDS and e.action_id == action_id]
    assert end.kind == "ObservationEvent", end
    return end.observation


def test_worker_loads_each_module_once(
    start_worker: Callable[..., WorkerProcess], aq: ActionQ
) -> None:
    worker = start_worker(ACTIONQ_TOOL_MODULES="tests.tools_for_tests,tests.worker.install_tools")
    conversation = aq.create_conversation()
    action = aq.submit_action(conversation.id, "report_loaded_modules", {})
    aq.wait_for_action(action.id, timeout=30)
    report = observation_of(aq, conversation.id, action.id)

    assert report["ppid"] == worker.pid  # reported by the pool child
    assert report["old_name_modules"] == []
    assert report["modules_sharing_a_file"] == {}
    assert report["task_failure_receivers"] == ["actionq.tasks.signals.on_task_failure"]
    assert report["task_failure_receiver_is_actionqs"] == [True]
    assert report["task_failure_receivers_with_actionq_uid"] == 1
    assert report["run_action_task_modules"] == ["actionq.tasks.actions"]
