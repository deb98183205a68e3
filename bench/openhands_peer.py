"""actionq against OpenHands' own agent-server, in the same run, driven by
the same client: OpenHands' ``RemoteConversation`` (``bench/openhands_client.py``
in a Python 3.12 venv with the pinned openhands-sdk, openhands-tools and
openhands-agent-server).

Both servers run on this machine at the same time, on free ports, and call
the same fake model (``tests/fake_model.py``): each conversation is ``steps``
``terminal`` calls of ``echo x<n>``, then a text answer (finished).

- actionq: ``actionq up`` (embedded server, its default 2 prefork tool
  processes, an agent worker), every step a durable job;
- agent-server: ``python -m openhands.agent_server`` (its defaults, minus
  VSCode, the browser and Chromium's preload, which these conversations do
  not use), every conversation a thread of the server process, each command
  in a tmux session.

Measured, side after side so a slow moment of the machine hits both alike:
time per step (from one ObservationEvent reaching the client to the next)
over ``step_rounds`` one-conversation runs; the wall time of a batch of C
conversations run at once; the servers' memory after the batch; and a crash:
the tool call kills the process running it.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil

from actionq.local.processes import free_port, stop_process
from bench.harness import ROOT, percentile, wait_for
from tests.fake_model import FakeModel
from tests.openhands.harness import (
    SDK_PINS,
    BasePython,
    SdkSetupError,
    client_env,
    ensure_sdk_venv,
    find_base_python,
)
from tests.openhands.harness import (
    _run_bounded as run_bounded,
)

PINS = (*SDK_PINS, "openhands-agent-server==1.58.2")
CACHE = ROOT / ".pytest_cache" / "d" / "openhands-bench-venv"
CLIENT = Path(__file__).resolve().parent / "openhands_client.py"
MODEL_KEY = "sk-bench-" + secrets.token_hex(8)
STEPS_KEY = "ohbench run the steps"
WARMUP_KEY = "ohbench warm up"
SIDES = ("actionq", "agent_server")


@dataclass(frozen=True)
class OpenHandsBench:
    steps: int  # terminal calls per conversation
    step_rounds: int  # one-conversation runs per side for the per-step figure
    batches: tuple[int, ...]  # conversations run at once
    timeout_s: float  # each client run's bound
    crash_timeout_s: float  # the bound of a crash that nothing may ever report


def _crash_key(side: str) -> str:
    return f"ohbench crash on {side}"


def _scripts(bench: OpenHandsBench) -> dict[str, list[dict[str, Any]]]:
    """The fake model's script of each kind of conversation."""

    def echo(n: int) -> dict[str, Any]:
        # A different command each step: both sides' stuck detectors stop a
        # conversation that repeats one action.
        return {"tool_calls": [{"name": "terminal", "arguments": {"command": f"echo x{n}"}}]}

    return {
        STEPS_KEY: [echo(n) for n in range(bench.steps)] + [{"content": "done"}],
        WARMUP_KEY: [echo(0), {"content": "warm"}],
    }


def crash_command(side: str, crash_dir: Path, kill: str) -> str:
    """Records which process is the shell's parent and when the kill came, then kills ``kill``."""
    where = crash_dir / side
    return f"cat /proc/$PPID/comm > {where}.parent; date +%s.%N > {where}.at; kill -9 {kill}"


# ----- the servers --------------------------------------------------------


class Server:
    """A server process of one side, in its own session (its group is killed at the end)."""

    name: str
    url: str
    key: str
    process: subprocess.Popen[bytes] | None = None

    def __init__(self, base: Path) -> None:
        self.base = base
        self.base.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        raise NotImplementedError

    def env(self) -> dict[str, str]:
        raise NotImplementedError

    def start(self) -> float:
        """Start and wait until /health answers; the seconds that took."""
        started = time.monotonic()
        with (self.base / "server.log").open("ab") as log:
            self.process = subprocess.Popen(
                self.command(), cwd=self.base, env=self.env(), stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        process = self.process

        def healthy() -> bool:
            if process.poll() is not None:
                log = (self.base / "server.log").read_text(errors="replace")
                raise RuntimeError(f"{self.name} exited:\n{log[-3000:]}")
            try:
                return httpx.get(self.url + "/health", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(healthy, 90, f"{self.name} to be healthy", 0.05)
        return time.monotonic() - started

    def tree(self) -> list[psutil.Process]:
        """The server's processes (its own and its children's)."""
        assert self.process is not None
        root = psutil.Process(self.process.pid)
        return [root, *root.children(recursive=True)]

    def memory(self) -> dict[str, Any]:
        """RSS and PSS of the tree, MiB. RSS counts pages forked children
        share once per process; PSS splits them."""
        rss = pss = 0
        names: list[str] = []
        for process in self.tree():
            with contextlib.suppress(psutil.Error):
                info = process.memory_full_info()
                rss += info.rss
                pss += getattr(info, "pss", info.rss)
                names.append(process.name())
        return {"rss_mib": rss / 2**20, "pss_mib": pss / 2**20, "processes": sorted(names)}

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process, 20, kill_group=True, kill_timeout=10)


def _plain_env() -> dict[str, str]:
    dropped = {"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV"}
    return {
        k: v for k, v in os.environ.items() if not k.startswith("ACTIONQ_") and k not in dropped
    }


class ActionqUp(Server):
    name = "actionq up"

    def command(self) -> list[str]:
        data = self.base / "data"
        return [sys.executable, "-m", "actionq", "up", "--port", str(self.port),
                "--data-dir", str(data)]  # fmt: skip

    def env(self) -> dict[str, str]:
        return _plain_env() | {"PYTHONPATH": str(ROOT)}

    def start(self) -> float:
        seconds = super().start()
        self.key = (self.base / "data" / "api-key").read_text().strip()
        return seconds


class AgentServer(Server):
    name = "agent-server"

    def __init__(self, base: Path, python: Path) -> None:
        super().__init__(base)
        self.python = python
        self.key = secrets.token_hex(16)
        self.secret = secrets.token_hex(16)

    def command(self) -> list[str]:
        return [str(self.python), "-m", "openhands.agent_server",
                "--host", "127.0.0.1", "--port", str(self.port)]  # fmt: skip

    def env(self) -> dict[str, str]:
        return client_env({}) | {
            "OH_SESSION_API_KEYS_0": self.key,
            # Kept across a restart: the LLM key is stored sealed with it.
            "OH_SECRET_KEY": self.secret,
            "OH_ENABLE_VSCODE": "false",
            "OH_ENABLE_BROWSER": "false",
            "OH_PRELOAD_TOOLS": "false",
            # Its tmux server (daemonised, not a child) is found by this.
            "TMUX_TMPDIR": str(self.base),
        }

    def tree(self) -> list[psutil.Process]:
        """The server's process tree plus its tmux server and the shells under it."""
        processes = super().tree()
        for tmux in self._tmux_servers():
            processes += [tmux, *tmux.children(recursive=True)]
        return processes

    def _tmux_servers(self) -> list[psutil.Process]:
        found = []
        for process in psutil.process_iter(["name"]):
            if "tmux" not in process.info["name"]:
                continue
            with contextlib.suppress(psutil.Error):
                if process.environ().get("TMUX_TMPDIR") == str(self.base):
                    found.append(process)
        return found

    def stop(self) -> None:
        super().stop()
        for tmux in self._tmux_servers():
            with contextlib.suppress(psutil.Error):
                tmux.kill()


# ----- the client ---------------------------------------------------------


def sdk_python() -> Path:
    found = find_base_python()
    if isinstance(found, str):
        raise RuntimeError(found)
    assert isinstance(found, BasePython)
    return ensure_sdk_venv(CACHE, found, pins=PINS)


def run_client(
    python: Path, server: Server, model_url: str, timeout: float, cwd: Path, **env: str
) -> dict[str, Any]:
    variables = {
        "OHB_API_URL": server.url,
        "OHB_API_KEY": server.key,
        "OHB_MODEL_URL": model_url,
        "OHB_MODEL_KEY": MODEL_KEY,
        "OHB_WORKING_DIR": str(server.base / "workspace"),
        "OHB_TIMEOUT": str(timeout),
    } | env
    done = run_bounded([str(python), str(CLIENT)], timeout + 240, client_env(variables), cwd)
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        raise RuntimeError(
            f"the client against {server.name} failed (exit {done.returncode}):\n"
            f"{done.stderr[-4000:]}"
        )
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def _batch(
    python: Path, server: Server, model_url: str, bench: OpenHandsBench, n: int, key: str
) -> dict[str, Any]:
    result = run_client(
        python, server, model_url, bench.timeout_s, server.base,
        OHB_MODE="batch", OHB_CONVERSATIONS=str(n), OHB_MESSAGE=key,
    )  # fmt: skip
    conversations = result["conversations"]
    failed = [
        c.get("error") or c.get("status") for c in conversations if c.get("status") != "finished"
    ]
    if failed:
        raise RuntimeError(f"{server.name}: conversations did not finish: {failed[:2]}")
    return {
        "wall_s": max(c["end"] for c in conversations) - min(c["start"] for c in conversations),
        "create_s": [c["create_s"] for c in conversations],
        "conversations": conversations,
    }


def step_seconds(conversation: dict[str, Any]) -> list[float]:
    """The time of each step as the client saw it: run() to the first
    ObservationEvent, then from each ObservationEvent to the next."""
    times = [conversation["start"], *conversation["observations"]]
    return [b - a for a, b in itertools.pairwise(times)]


def _stats(values: list[float]) -> dict[str, float]:
    return {
        "n": len(values),
        "p50": statistics.median(values),
        "p90": percentile(values, 90),
        "max": max(values),
    }


# ----- the crash ----------------------------------------------------------


def _crash(
    case: str,
    python: Path,
    server: Server,
    model_url: str,
    crash_dir: Path,
    on_crash: Callable[[], dict[str, Any]] | None,
    timeout: float,
) -> dict[str, Any]:
    """Run the crash conversation; ``on_crash`` (agent-server) runs in the
    bench once the kill happened, while the client waits (the restart)."""
    at_file = crash_dir / f"{case}.at"
    with ThreadPoolExecutor(1) as pool:
        client = pool.submit(
            run_client, python, server, model_url, timeout, server.base,
            OHB_MODE="crash", OHB_MESSAGE=_crash_key(case),
        )  # fmt: skip
        restart: dict[str, Any] = {}
        if on_crash is not None:
            wait_for(lambda: at_file.exists() or client.done(), timeout, "the crash", 0.02)
            if not client.done():
                restart = on_crash()
        result = client.result(timeout + 300)
    crash_at = float(at_file.read_text().strip())
    call = result["call_ids"][0] if result["call_ids"] else None
    socket = [e["at"] for e in result["socket_errors"] if e["tool_call_id"] == call]
    listed = [e for e in result["listed_errors"] if e["tool_call_id"] == call]
    return {
        "shell_parent": (crash_dir / f"{case}.parent").read_text().strip(),
        "client_status": result["status"],
        "server_status": result["server_status"],
        "run_error": result["run_error"],
        "run_returned_after_s": result["run_returned"] - crash_at,
        "socket_error_after_s": (socket[0] - crash_at) if socket else None,
        "error_for_the_call": listed[0]["error"] if listed else None,
        "observation_of_the_call": next(
            (o["observation"] for o in result["observations"] if o["tool_call_id"] == call), None
        ),
        **restart,
    }


def _restart_agent_server(server: AgentServer) -> Callable[[], dict[str, Any]]:
    """A supervisor's restart: as soon as the process is gone, start it again
    on the same folders and port."""

    def restart() -> dict[str, Any]:
        assert server.process is not None
        process = server.process
        wait_for(lambda: process.poll() is not None, 30, "agent-server to die", 0.01)
        died = time.time()
        seconds = server.start()
        return {"restarted_after_death_s": time.time() - died, "restart_to_healthy_s": seconds}

    return restart


# ----- the section ----------------------------------------------------------


def measure_openhands(bench: OpenHandsBench, say: Callable[[str], None]) -> dict[str, Any]:
    try:
        python = sdk_python()
    except (RuntimeError, SdkSetupError) as e:
        return {"not_measured": f"not measured (no SDK venv: {e})"}
    base = Path(tempfile.mkdtemp(prefix="actionq-bench-openhands-"))
    crash_dir = base / "crash"
    crash_dir.mkdir()
    up = ActionqUp(base / "actionq")
    agent_server = AgentServer(base / "agent_server", python)
    servers: dict[str, Server] = {"actionq": up, "agent_server": agent_server}
    try:
        with FakeModel(api_key=MODEL_KEY) as fake:
            start_s = {side: server.start() for side, server in servers.items()}
            say(f"started in {json.dumps({k: round(v, 1) for k, v in start_s.items()})} s")
            fake_scripts = _scripts(bench)
            assert agent_server.process is not None
            fake_scripts |= {
                _crash_key(case): _crash_reply(case, crash_dir, kill)
                for case, kill in _crash_kills(agent_server.process.pid).items()
            }
            for key, replies in fake_scripts.items():
                fake.script(key, replies)
            result = _measure(bench, python, servers, fake.base_url, crash_dir, agent_server, say)
            return result | {"start_s": start_s}
    finally:
        for server in servers.values():
            server.stop()
        shutil.rmtree(base, ignore_errors=True)


def _crash_kills(agent_server_pid: int) -> dict[str, str]:
    """What each crash case's command kills: actionq's pool child (the
    shell's parent), agent-server's process (as an eviction would), and, the
    same command as actionq's, agent-server's shell's parent (its tmux server)."""
    return {
        "actionq": "$PPID",
        "agent_server": str(agent_server_pid),
        "agent_server_shell_parent": "$PPID",
    }


def _crash_reply(side: str, crash_dir: Path, kill: str) -> list[dict[str, Any]]:
    command = crash_command(side, crash_dir, kill)
    return [
        {"tool_calls": [{"name": "terminal", "arguments": {"command": command}}]},
        {"content": "That command crashed; I will not run it again."},
    ]


def _measure(
    bench: OpenHandsBench,
    python: Path,
    servers: dict[str, Server],
    model_url: str,
    crash_dir: Path,
    agent_server: AgentServer,
    say: Callable[[str], None],
) -> dict[str, Any]:
    # Not timed: each side's first conversation (imports, litellm, tmux).
    for server in servers.values():
        _batch(python, server, model_url, bench, 1, WARMUP_KEY)
    steps: dict[str, list[float]] = {side: [] for side in SIDES}
    for round_ in range(bench.step_rounds):
        for side, server in servers.items():
            run = _batch(python, server, model_url, bench, 1, STEPS_KEY)
            steps[side] += step_seconds(run["conversations"][0])
            say(f"steps round {round_ + 1} {side}: conversation {run['wall_s']:.2f} s")
    batches: dict[str, dict[str, Any]] = {side: {} for side in SIDES}
    memory: dict[str, dict[str, Any]] = {}
    for n in bench.batches:
        for side, server in servers.items():
            run = _batch(python, server, model_url, bench, n, STEPS_KEY)
            batches[side][str(n)] = {"wall_s": run["wall_s"], "create_s": _stats(run["create_s"])}
            memory[side] = server.memory() | {"after_batch_of": n}
            say(
                f"batch of {n} {side}: {run['wall_s']:.2f} s, RSS {memory[side]['rss_mib']:.0f} MiB"
            )
    crash = {
        "actionq": _crash("actionq", python, servers["actionq"], model_url, crash_dir, None,
                          bench.timeout_s),
        "agent_server": _crash(
            "agent_server", python, agent_server, model_url, crash_dir,
            _restart_agent_server(agent_server), bench.timeout_s,
        ),
        # No restart: the server process lives; bounded by crash_timeout_s.
        "agent_server_shell_parent": _crash(
            "agent_server_shell_parent", python, agent_server, model_url, crash_dir, None,
            bench.crash_timeout_s,
        ),
    }  # fmt: skip
    for side, seen in crash.items():
        say(f"crash {side}: {json.dumps(seen)}")
    return _result(bench, steps, batches, memory, crash)


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def _result(
    bench: OpenHandsBench,
    steps: dict[str, list[float]],
    batches: dict[str, dict[str, Any]],
    memory: dict[str, dict[str, Any]],
    crash: dict[str, dict[str, Any]],
) -> dict[str, Any]:
    step_stats = {side: _stats(values) for side, values in steps.items()}
    a, o = "actionq", "agent_server"
    ratios: dict[str, float | None] = {
        "step_p50": _ratio(step_stats[a]["p50"], step_stats[o]["p50"]),
        "step_p90": _ratio(step_stats[a]["p90"], step_stats[o]["p90"]),
        **{
            f"batch_{n}_wall": _ratio(batches[a][str(n)]["wall_s"], batches[o][str(n)]["wall_s"])
            for n in bench.batches
        },
        "rss": _ratio(memory[a]["rss_mib"], memory[o]["rss_mib"]),
        "pss": _ratio(memory[a]["pss_mib"], memory[o]["pss_mib"]),
        "crash_to_run_error": _ratio(
            crash[a]["run_returned_after_s"], crash[o]["run_returned_after_s"]
        ),
    }
    return {
        "steps": bench.steps,
        "step_rounds": bench.step_rounds,
        "batches": list(bench.batches),
        "pins": list(PINS),
        "step_s": step_stats,
        "batch": batches,
        "memory": memory,
        "crash": crash,
        # actionq ÷ agent-server; every figure: lower is better.
        "ratios": ratios,
    }
