"""Run OpenHands' own client (openhands-sdk, Python >= 3.12) against actionq.

actionq runs on 3.11 and the SDK needs 3.12, so the client side runs in a
separate venv: `find_base_python` finds an interpreter, `ensure_sdk_venv`
builds the venv once per checkout (pytest's cache folder, keyed by the pins
and the interpreter), `run_client` runs a script of `clients/` in it and
reads its result, the last line it prints, as JSON. docs/testing.md says how
to run these tests and how to force a rebuild.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SDK_PINS = ("openhands-sdk==1.58.2", "openhands-tools==1.58.2")
MIN_VERSION = (3, 12)
CLIENTS = Path(__file__).resolve().parent / "clients"

# Every script run: litellm reads its model cost map from the wheel, not from
# the network at import; the SDK prints no banner on stdout.
SCRIPT_ENV = {"LITELLM_LOCAL_MODEL_COST_MAP": "True", "OPENHANDS_SUPPRESS_BANNER": "1"}

# What the scripts read (clients/_common.py); a script's own parameters are
# further OH_CLIENT_* names it documents itself.
API_URL = "OH_CLIENT_API_URL"
API_KEY = "OH_CLIENT_API_KEY"
MODEL_URL = "OH_CLIENT_MODEL_URL"
MODEL_KEY = "OH_CLIENT_MODEL_KEY"
MODEL_NAME = "OH_CLIENT_MODEL_NAME"
WORKING_DIR = "OH_CLIENT_WORKING_DIR"

PYTHON_VARIABLE = "ACTIONQ_TEST_SDK_PYTHON"
REBUILD_VARIABLE = "ACTIONQ_TEST_SDK_REBUILD"
INSTALL_TIMEOUT_VARIABLE = "ACTIONQ_TEST_SDK_INSTALL_TIMEOUT"
DEFAULT_INSTALL_TIMEOUT = 600.0
_READY_MARKER = "installed.json"
_VERSION_PROBE = "import sys; print('.'.join(map(str, sys.version_info[:3])))"


class SdkSetupError(Exception):
    """The SDK venv could not be built; the message says what ran and how it failed."""


@dataclass(frozen=True)
class BasePython:
    path: Path
    version: str  # "3.12.1"
    found_by: str  # which rule of `find_base_python` found it


@dataclass(frozen=True)
class ClientResult:
    result: dict[str, Any]  # the script's last stdout line
    stdout: str
    stderr: str
    seconds: float


# The `run_client` fixture: run_client(script_name, env, timeout, stdin=None).
RunClient = Callable[..., ClientResult]


@dataclass
class _Finished:
    returncode: int | None  # None: killed at the timeout
    stdout: str
    stderr: str
    seconds: float
    command: list[str] = field(default_factory=list)


def install_timeout() -> float:
    return float(os.environ.get(INSTALL_TIMEOUT_VARIABLE) or DEFAULT_INSTALL_TIMEOUT)


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"true", "1", "yes"}


def _run_bounded(
    command: list[str],
    timeout: float,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    stdin: str | None = None,
) -> _Finished:
    """Run to the end or kill the whole process group at `timeout` (pip and
    the client may start children that would keep the pipes open)."""
    started = time.monotonic()
    process = subprocess.Popen(
        command,
        stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(env) if env is not None else None,
        cwd=cwd,
        start_new_session=True,
    )
    try:
        out, err = process.communicate(stdin, timeout=timeout)
        code: int | None = process.returncode
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        out, err = process.communicate()
        code = None
    return _Finished(code, out, err, time.monotonic() - started, command)


def _version_of(python: str | Path) -> tuple[int, ...] | None:
    """The version an interpreter reports, or None if it does not run (a pyenv
    shim for a version that is not selected exits 127)."""
    try:
        done = _run_bounded([str(python), "-c", _VERSION_PROBE], timeout=20)
    except OSError:
        return None
    if done.returncode != 0:
        return None
    try:
        return tuple(int(part) for part in done.stdout.strip().split("."))
    except ValueError:
        return None


def _pyenv_roots(env: Mapping[str, str]) -> list[Path]:
    roots: list[Path] = []
    pyenv = shutil.which("pyenv", path=env.get("PATH"))
    if pyenv is not None:
        done = _run_bounded([pyenv, "root"], timeout=20, env=env)
        if done.returncode == 0 and done.stdout.strip():
            roots.append(Path(done.stdout.strip()))
    if env.get("PYENV_ROOT"):
        roots.append(Path(env["PYENV_ROOT"]))
    home = Path(env["HOME"]) if env.get("HOME") else Path.home()
    roots.append(home / ".pyenv")  # pyenv installed but not on PATH
    unique: list[Path] = []
    for root in roots:
        if root not in unique:
            unique.append(root)
    return unique


def _candidates(env: Mapping[str, str]) -> Iterator[tuple[str, str]]:
    for name in ("python3.13", "python3.12"):
        found = shutil.which(name, path=env.get("PATH"))
        if found is not None:
            yield f"{name} on PATH", found
    for root in _pyenv_roots(env):
        for found in sorted(glob.glob(str(root / "versions" / "3.1[23]*" / "bin" / "python3"))):
            yield f"pyenv ({root})", found


def find_base_python(env: Mapping[str, str] | None = None) -> BasePython | str:
    """A Python >= 3.12 for the SDK venv, or the reason there is none.

    In order: ``$ACTIONQ_TEST_SDK_PYTHON`` (it must work: a wrong setting is
    an error, not a fallback), ``python3.13`` / ``python3.12`` on PATH,
    pyenv's ``versions/3.1[23]*/bin/python3`` (under ``pyenv root``,
    ``$PYENV_ROOT`` and ``~/.pyenv``). Raises SdkSetupError for a bad
    ``$ACTIONQ_TEST_SDK_PYTHON``."""
    env = os.environ if env is None else env
    wanted = ".".join(map(str, MIN_VERSION))
    if env.get(PYTHON_VARIABLE):
        chosen = env[PYTHON_VARIABLE]
        version = _version_of(chosen)
        if version is None or version[:2] < MIN_VERSION:
            said = "does not run" if version is None else f"is {'.'.join(map(str, version))}"
            raise SdkSetupError(
                f"${PYTHON_VARIABLE}={chosen} {said}; it must be Python >= {wanted}"
            )
        return BasePython(Path(chosen), ".".join(map(str, version)), f"${PYTHON_VARIABLE}")
    tried: list[str] = []
    for found_by, path in _candidates(env):
        version = _version_of(path)
        if version is not None and version[:2] >= MIN_VERSION:
            return BasePython(Path(path), ".".join(map(str, version)), found_by)
        tried.append(f"{path} ({'does not run' if version is None else version})")
    return (
        f"no Python >= {wanted} for the openhands-sdk client: set ${PYTHON_VARIABLE}, "
        "or put python3.12/python3.13 on PATH, or install one with pyenv"
        + (f" (tried: {', '.join(tried)})" if tried else " (found no candidate)")
    )


def venv_dir(cache_root: Path, base: BasePython, pins: tuple[str, ...] = SDK_PINS) -> Path:
    """The venv's folder: one per interpreter version and pin set."""
    named = "-".join(pin.replace("==", "-") for pin in pins)
    return cache_root / f"py{base.version}-{named}"


def _venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def _expected_marker(base: BasePython, pins: tuple[str, ...] = SDK_PINS) -> dict[str, Any]:
    return {"pins": list(pins), "python": base.version, "base": str(base.path)}


def sdk_venv_ready(cache_root: Path, base: BasePython, pins: tuple[str, ...] = SDK_PINS) -> bool:
    """True if the venv was fully installed (its marker, written last, matches)
    and its interpreter still runs (the base one may have been removed)."""
    venv = venv_dir(cache_root, base, pins)
    try:
        marker = json.loads((venv / _READY_MARKER).read_text())
    except (OSError, ValueError):
        return False
    return marker == _expected_marker(base, pins) and _version_of(_venv_python(venv)) is not None


def _tail(text: str, lines: int = 40) -> str:
    # pip's "Location ... is ignored" warnings (a pip.conf naming absent
    # local indexes) would push the real error out of the tail.
    kept = [line for line in text.splitlines() if not line.startswith("WARNING: Location")]
    return "\n".join(kept[-lines:])


def _check(done: _Finished, what: str, timeout: float) -> None:
    if done.returncode == 0:
        return
    how = (
        f"timed out after {timeout:.0f} s" if done.returncode is None else f"exit {done.returncode}"
    )
    raise SdkSetupError(
        f"{what} failed ({how}): {' '.join(done.command)}\n"
        f"--- output (tail) ---\n{_tail(done.stdout + done.stderr)}"
    )


def _install(venv: Path, base: BasePython, timeout: float, pins: tuple[str, ...]) -> None:
    deadline = time.monotonic() + timeout

    def left() -> float:
        return max(1.0, deadline - time.monotonic())

    command = [str(base.path), "-m", "venv", str(venv)]
    _check(_run_bounded(command, left()), "creating the SDK venv", timeout)
    python = str(_venv_python(venv))
    command = [python, "-m", "pip", "install", "--disable-pip-version-check", "--no-input"]
    _check(_run_bounded([*command, *pins], left()), "pip install of the SDK", timeout)
    # Import what the scripts import, with the script environment, and check
    # pip installed the pinned versions.
    names = [pin.split("==")[0] for pin in pins]
    probe = (
        "import json, openhands.sdk, openhands.tools; from importlib.metadata import version; "
        f"print(json.dumps([version(name) for name in {names!r}]))"
    )
    done = _run_bounded([python, "-c", probe], left(), env=client_env({}))
    _check(done, "importing the installed SDK", timeout)
    versions = json.loads(done.stdout.strip().splitlines()[-1])
    if versions != [pin.split("==")[1] for pin in pins]:
        raise SdkSetupError(f"the SDK venv has {versions}, not {pins}")


def ensure_sdk_venv(
    cache_root: Path,
    base: BasePython,
    timeout: float | None = None,
    pins: tuple[str, ...] = SDK_PINS,
) -> Path:
    """The SDK venv's python, built if it is missing, half-installed (no
    marker: an interrupted run), for other pins or interpreter, or
    ``$ACTIONQ_TEST_SDK_REBUILD`` is set. A lock keeps two test runs of
    the same checkout from building it at once. ``pins``: the packages
    (bench.openhands_peer adds openhands-agent-server)."""
    timeout = install_timeout() if timeout is None else timeout
    venv = venv_dir(cache_root, base, pins)
    cache_root.mkdir(parents=True, exist_ok=True)
    with open(cache_root / f"{venv.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if os.environ.get(REBUILD_VARIABLE) or not sdk_venv_ready(cache_root, base, pins):
            shutil.rmtree(venv, ignore_errors=True)
            _install(venv, base, timeout, pins)
            # Written last: its presence means every step above succeeded.
            (venv / _READY_MARKER).write_text(json.dumps(_expected_marker(base, pins)))
    return _venv_python(venv)


def client_env(env: Mapping[str, str]) -> dict[str, str]:
    """The environment of a script: this one without actionq's settings or
    this venv's paths, plus SCRIPT_ENV and the script's own variables."""
    dropped = {"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV"}
    base = {
        k: v for k, v in os.environ.items() if not k.startswith("ACTIONQ_") and k not in dropped
    }
    return base | SCRIPT_ENV | dict(env)


def run_client_with(
    python: Path,
    script_name: str,
    env: Mapping[str, str],
    timeout: float,
    cwd: Path | None = None,
    stdin: str | None = None,
) -> ClientResult:
    """Run ``clients/<script_name>.py``; fails the test on a non-zero exit, a
    timeout or a last stdout line that is not a JSON object."""
    import pytest  # here, so that the module's setup functions work outside pytest

    script = CLIENTS / f"{script_name}.py"
    if not script.is_file():
        pytest.fail(f"no client script {script}")
    done = _run_bounded([str(python), str(script)], timeout, client_env(env), cwd, stdin)
    where = f"client script {script_name}"
    if done.returncode != 0:
        how = f"timed out after {timeout:.0f} s" if done.returncode is None else "failed"
        pytest.fail(
            f"{where} {how} (exit {done.returncode})\n--- stderr (tail) ---\n"
            f"{done.stderr[-6000:]}\n--- stdout (tail) ---\n{done.stdout[-2000:]}",
            pytrace=False,
        )
    lines = done.stdout.strip().splitlines()
    try:
        result = json.loads(lines[-1]) if lines else None
    except ValueError:
        result = None
    if not isinstance(result, dict):
        pytest.fail(
            f"{where}: the last stdout line is not a JSON object\n--- stdout (tail) ---\n"
            f"{done.stdout[-2000:]}\n--- stderr (tail) ---\n{done.stderr[-4000:]}",
            pytrace=False,
        )
    return ClientResult(result, done.stdout, done.stderr, done.seconds)


def validate_events_with(python: Path, events: list[dict[str, Any]]) -> list[str]:
    """The errors of the SDK's ``Event.model_validate`` for each event (none:
    every event reads as RemoteConversation would read it)."""
    done = run_client_with(python, "validate_events", {}, timeout=120, stdin=json.dumps(events))
    errors = done.result["errors"]
    assert isinstance(errors, list)
    return [str(error) for error in errors]


# Where pytest keeps the venv (tests/openhands/conftest.py: the cache folder
# "openhands-sdk-venv" of the checkout's .pytest_cache).
CHECKOUT_CACHE = Path(__file__).resolve().parents[2] / ".pytest_cache" / "d" / "openhands-sdk-venv"


if __name__ == "__main__":
    # `python tests/openhands/harness.py`: which interpreter the tests would
    # use; with --build, also build the venv where the tests will look for it
    # (.ci/run does this while it installs actionq, not inside the test run).
    try:
        found = find_base_python()
        if isinstance(found, str):
            sys.exit(found)
        print(f"{found.path} {found.version} ({found.found_by})")
        if sys.argv[1:] == ["--build"]:
            print(ensure_sdk_venv(CHECKOUT_CACHE, found))
    except SdkSetupError as exc:
        sys.exit(str(exc))
