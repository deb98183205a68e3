"""The agent loop (section ``agent``): what a durable step costs, and how many
conversations one agent worker carries at once.

1. **Per-step overhead.** One conversation of ``steps`` model steps, each a
   ``tick`` tool call (a no-op of ``bench/tools.py``), then a text answer, against the
   fake OpenAI-compatible model (``tests/fake_model.py``, its own process,
   no delay). Three sides, alternating round by round:

   - ``actionq_llm``: ``AgentSpec(kind="llm")``: every step an
     ``actionq.agent_step`` task on the agent worker (thread pool), which
     calls litellm, every call a ``tick`` action on the prefork tool worker;
   - ``actionq_scripted``: the same loop with ``kind="scripted"`` (no HTTP,
     no litellm): what the loop itself costs;
   - ``in_process``: the same conversation with no actionq: this process
     calls ``litellm.completion`` on the same fake model with the same
     messages and tool specs, and calls the ``tick`` tool's function itself.

   A step's time comes from the events' timestamps: step k runs from the
   event that ended step k-1 (the user's ``MessageEvent`` for k = 1, else the
   ``ObservationEvent`` of call k-1) to the ``ObservationEvent`` of call k;
   it splits at the ``ActionEvent`` of call k (made in the agent worker right
   after the model answered) into the model side and the tool side. The
   in-process loop times the same span with ``perf_counter``.

2. **Concurrency.** ``conversations`` conversations of 3 steps each (two
   ``tick`` calls and a text answer), the fake model sleeping ``delay`` s
   before every reply, for each of ``worker_shapes``: agent worker processes
   of so many threads each (the full run: one of 64, the default
   ``ACTIONQ_AGENT_CONCURRENCY``; one of 200; two of 100). Wall time from the
   first ``send_message`` until every conversation has ended; the agent
   workers' RSS and threads sampled with psutil, every process's CPU time.
   First the fake model alone gets ``conversations`` simultaneous requests,
   to show it answers them all at once (else the run would measure it).
"""

from __future__ import annotations

import contextlib
import dataclasses
import http.client
import json
import math
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psutil
import redis

from actionq.agent.spec import AgentSpec, ScriptedCall, ScriptedTurn
from actionq.agent.view import DEFAULT_SYSTEM_PROMPT, detect_stuck, render_messages, safe_window
from actionq.models import ActionEvent, Event, MessageEvent, ObservationEvent
from actionq.service import ActionQ
from actionq.settings import Settings
from actionq.tools import ToolContext, get_tool, load_tool_modules, registered_tools
from bench.harness import Stack, summary, wait_for

__all__ = ["AgentBench", "measure_agent"]

MODEL = "openai/fake-bench"
# The variable the agent worker reads the key from (the fake checks it).
KEY_ENV = "BENCH_FAKE_MODEL_KEY"
KEY = "bench-key-not-a-secret"
STEPS_KEY = "bench-steps"
CONCURRENCY_KEY = "bench-concurrency"
CAPACITY_KEY = "bench-capacity"
WARMUP_KEY = "bench-warmup"
# bench.tools' no-op that returns its argument: distinct calls, so the loop's
# stuck detection (the same call and result 4 times) stays quiet.
TOOL = "tick"
ENDED = {"finished", "error", "stuck"}
_BLOCK_MS = 1000  # under redis-py's 5 s socket timeout
Log = Callable[[str], None]


@dataclass(frozen=True)
class AgentBench:
    steps: int  # model steps with a tool call in the per-step conversation
    step_rounds: int  # rounds of the three per-step sides
    conversations: int  # concurrency run
    delay_s: float  # the fake model's sleep before each reply (concurrency run)
    # (agent worker processes, threads each) of each concurrency run; the
    # first also serves the per-step runs.
    worker_shapes: tuple[tuple[int, int], ...]
    tool_concurrency: int  # prefork processes of the tool worker


def _tick(n: int, **extra: Any) -> dict[str, Any]:
    return {"tool_calls": [{"name": TOOL, "arguments": {"n": n}}], **extra}


def _scripts(bench: AgentBench) -> dict[str, list[dict[str, Any]]]:
    delay = bench.delay_s
    return {
        STEPS_KEY: [_tick(k) for k in range(1, bench.steps + 1)]
        + [{"content": f"called {TOOL} {bench.steps} times"}],
        CONCURRENCY_KEY: [
            _tick(1, delay=delay),
            _tick(2, delay=delay),
            {"content": "done", "delay": delay},
        ],
        CAPACITY_KEY: [{"content": "here", "delay": delay}],
        WARMUP_KEY: [_tick(1), {"content": "warm"}],
    }


class FakeModelProcess:
    """``python -m tests.fake_model`` as its own process (its threads do not
    share a GIL with the client or the workers it serves)."""

    def __init__(self, stack: Stack, scripts: dict[str, list[dict[str, Any]]]) -> None:
        path = stack.base / "fake_model_script.json"
        path.write_text(json.dumps(scripts))
        log = stack.base / "fake_model.log"
        command = [sys.executable, "-m", "tests.fake_model", "--script", str(path)]
        command += ["--api-key", KEY]
        self.process = stack.spawn(command, "fake_model")
        self.base_url: str = wait_for(lambda: _url_in(log), 30, "the fake model", 0.02)

    def cpu_process(self) -> psutil.Process:
        return psutil.Process(self.process.pid)


def _url_in(log: Path) -> str | None:
    text = log.read_text() if log.exists() else ""
    for line in text.splitlines():
        if line.startswith("http://"):
            return line.strip()
    return None


def check_fake_model(base_url: str, n: int, delay_s: float) -> dict[str, Any]:
    """``n`` requests sent at the same moment (one thread and connection
    each, as the agent worker's threads do): all should be answered about
    ``delay_s`` after they were sent, none refused or reset."""
    url = urlsplit(base_url)
    host = url.hostname or "127.0.0.1"
    body = json.dumps(
        {"model": "fake", "messages": [{"role": "user", "content": CAPACITY_KEY}]}
    ).encode()
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {KEY}"}
    barrier = threading.Barrier(n)
    seconds: list[float] = []
    errors: list[str] = []

    def one() -> None:
        barrier.wait()
        start = time.perf_counter()
        try:
            connection = http.client.HTTPConnection(host, url.port, timeout=30)
            connection.request("POST", f"{url.path}/chat/completions", body, headers)
            response = connection.getresponse()
            response.read()
            connection.close()
            if response.status != 200:
                errors.append(f"HTTP {response.status}")
                return
            seconds.append(time.perf_counter() - start)
        except OSError as e:
            errors.append(type(e).__name__)

    threads = [threading.Thread(target=one) for _ in range(n)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    wall = time.perf_counter() - start
    errors_by_kind = {kind: errors.count(kind) for kind in sorted(set(errors))}
    return {
        "requests": n,
        "delay_s": delay_s,
        "wall_s": wall,
        "answered": len(seconds),
        "errors": errors_by_kind,
        "seconds": summary(seconds) if seconds else None,
        # SYN retries start at 1 s: a refused connection shows as a delay past it.
        "ok": not errors and bool(seconds) and max(seconds) < delay_s + 0.9,
    }


def _ts(event: Event) -> float:
    return datetime.fromisoformat(event.timestamp).timestamp()


def step_times(events: list[Event], steps: int) -> dict[str, Any]:
    """Per step: (total, model side, tool side) in seconds, from timestamps."""
    user = next(e for e in events if isinstance(e, MessageEvent) and e.source == "user")
    calls = [e for e in events if isinstance(e, ActionEvent)]
    observations = [e for e in events if isinstance(e, ObservationEvent)]
    answer = next(e for e in events if isinstance(e, MessageEvent) and e.source == "agent")
    if len(calls) != steps or len(observations) != steps:
        raise RuntimeError(f"{len(calls)} calls and {len(observations)} results, not {steps}")
    if [o.observation.get("n") for o in observations] != list(range(1, steps + 1)):
        raise RuntimeError(f"the results are not {TOOL} 1..{steps}")
    ends = [_ts(user), *(_ts(o) for o in observations)]
    return {
        "step_s": [ends[k + 1] - ends[k] for k in range(steps)],
        "model_side_s": [_ts(calls[k]) - ends[k] for k in range(steps)],
        "tool_side_s": [ends[k + 1] - _ts(calls[k]) for k in range(steps)],
        "answer_s": _ts(answer) - ends[-1],
        "run_s": _ts(answer) - ends[0],
    }


class StreamWatch:
    """Waits, by blocking ``XREAD`` on their event streams (pushed, not
    polled), until conversations have ended (finished, error or stuck)."""

    def __init__(self, aq: ActionQ, conversations: list[str]) -> None:
        self.redis = aq.store.redis
        self.key_of = {aq.store.keys.events(cid): cid for cid in conversations}
        self.last = dict.fromkeys(self.key_of, "0")
        self.ended: dict[str, str] = {}

    def wait(self, timeout: float) -> dict[str, str]:
        deadline = time.monotonic() + timeout
        while len(self.ended) < len(self.key_of):
            if time.monotonic() > deadline:
                left = len(self.key_of) - len(self.ended)
                raise TimeoutError(f"{left} conversation(s) still running after {timeout:.0f} s")
            waiting: dict[Any, Any] = {
                k: v for k, v in self.last.items() if self.key_of[k] not in self.ended
            }
            reply: Any = self.redis.xread(waiting, block=_BLOCK_MS)
            for key, entries in reply or []:
                for entry_id, fields in entries:
                    self.last[key] = entry_id
                    event = json.loads(fields["e"])
                    if event["kind"] == "ConversationStateUpdateEvent" and event["value"] in ENDED:
                        self.ended[self.key_of[key]] = event["value"]
        return self.ended


def _commands(client: redis.Redis) -> dict[str, int]:
    stats: Any = client.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()}


def _cpu(processes: dict[str, list[psutil.Process]]) -> dict[str, float]:
    out = {}
    for role, group in processes.items():
        total = 0.0
        for process in group:
            with contextlib.suppress(psutil.NoSuchProcess):
                times = process.cpu_times()
                total += times.user + times.system
        out[role] = total
    return out


class InProcessLoop:
    """The loop with no actionq: litellm.completion, then the tool's function,
    in this process, the same messages and tool specs as the agent worker's."""

    def __init__(self, base_url: str, workdir: Path) -> None:
        from actionq.agent.llm import load_litellm  # the same litellm set-up

        self.litellm = load_litellm()
        self.base_url = base_url
        load_tool_modules(["bench.tools"])
        self.tools = [tool.spec() for tool in registered_tools()]
        workdir.mkdir(parents=True, exist_ok=True)
        self.context = ToolContext(
            conversation_id="in-process",
            action_id="in-process",
            workdir=workdir,
            max_output_bytes=1 << 20,
            memory_limit_mb=0,
        )

    def run(self, text: str) -> dict[str, Any]:
        messages: list[dict[str, Any]] = [
            {"role": "system", "content": DEFAULT_SYSTEM_PROMPT},
            {"role": "user", "content": text},
        ]
        steps: list[float] = []
        model_side: list[float] = []
        start = last = time.perf_counter()
        while True:
            response = self.litellm.completion(
                model=MODEL,
                api_base=self.base_url,
                api_key=KEY,
                messages=messages,
                tools=self.tools,
                timeout=30,
                num_retries=0,
                max_retries=0,
            )
            message = response.choices[0].message
            if not message.tool_calls:
                return {
                    "step_s": steps,
                    "model_side_s": model_side,
                    "answer_s": time.perf_counter() - last,
                    "run_s": time.perf_counter() - start,
                }
            model_side.append(time.perf_counter() - last)
            messages.append(self._assistant(message))
            for call in message.tool_calls:
                tool = get_tool(call.function.name)
                args = tool.args_model.model_validate(json.loads(call.function.arguments or "{}"))
                result = tool.run(args, self.context)
                messages.append(
                    {"role": "tool", "tool_call_id": call.id, "content": json.dumps(result)}
                )
            now = time.perf_counter()
            steps.append(now - last)
            last = now

    @staticmethod
    def _assistant(message: Any) -> dict[str, Any]:
        return {
            "role": "assistant",
            "content": message.content or "",
            "tool_calls": [
                {
                    "id": call.id,
                    "type": "function",
                    "function": {"name": call.function.name, "arguments": call.function.arguments},
                }
                for call in message.tool_calls
            ],
        }


class AgentStack:
    """A server, the fake model, a prefork tool worker and agent worker(s)."""

    def __init__(self, stack: Stack, bench: AgentBench) -> None:
        self.stack = stack
        self.bench = bench
        self.fake = FakeModelProcess(stack, _scripts(bench))
        self.settings = Settings(
            redis_url=stack.url,
            tool_modules=["bench.tools"],
            model=MODEL,
            model_base_url=self.fake.base_url,
            model_api_key_env=KEY_ENV,
        )
        self.aq = ActionQ(self.settings)
        self.model_env = {
            "ACTIONQ_MODEL": MODEL,
            "ACTIONQ_MODEL_BASE_URL": self.fake.base_url,
            "ACTIONQ_MODEL_API_KEY_ENV": KEY_ENV,
            KEY_ENV: KEY,
        }
        assert stack.server is not None and stack.server.process is not None
        self.server = psutil.Process(stack.server.process.pid)
        self.tools = stack.worker("tools", bench.tool_concurrency)
        wait_for(lambda: self.aq.store.live_worker_ids(), 60, "the tool worker", 0.05)
        self.agents: list[subprocess.Popen[bytes]] = []
        self.shape = (0, 0)  # (agent worker processes, threads each)
        self.first_llm_step_s: list[float] = []
        # An agent worker's RSS once it is up, before its first model call
        # imports litellm (MiB), per start.
        self.rss_before_litellm_mib: list[float] = []

    def start_agents(self, processes: int, threads: int) -> None:
        """Stop the agent workers running, start ``processes`` of ``threads``
        threads each, and warm them up."""
        for agent in self.agents:
            self.stack.stop(agent)
        before = set(self.aq.store.live_worker_ids())
        self.agents = [
            self.stack.worker(f"agent-{processes}x{threads}-{i}", threads, agent=True,
                              **self.model_env)
            for i in range(processes)
        ]  # fmt: skip
        self.shape = (processes, threads)
        wait_for(  # a lease each
            lambda: len(set(self.aq.store.live_worker_ids()) - before) >= processes,
            60,
            "the workers",
            0.05,
        )
        for agent in self.agents:
            self.rss_before_litellm_mib.append(psutil.Process(agent.pid).memory_info().rss / 2**20)
        self.warm_up(4 * processes)

    def warm_up(self, llm_conversations: int) -> None:
        """Not timed: each agent worker's first model call imports litellm
        (seconds), and the tool worker's children start; a scripted run too."""
        llm = [
            self.aq.create_conversation(agent=AgentSpec(kind="llm")).id
            for _ in range(llm_conversations)
        ]
        scripted = self.aq.create_conversation(agent=_scripted(1)).id
        for cid in llm:
            self.aq.send_message(cid, f"{WARMUP_KEY}: one call", run=True)
        self.aq.send_message(scripted, "warm-up", run=True)
        ended = StreamWatch(self.aq, [*llm, scripted]).wait(120)
        if set(ended.values()) != {"finished"}:
            raise RuntimeError(f"warm-up conversations ended {ended}; see {self.stack.base}")
        # The slowest first step: a worker's first model call imports litellm.
        self.first_llm_step_s.append(
            max(step_times(self.aq.all_events(cid), 1)["model_side_s"][0] for cid in llm)
        )

    def processes(self) -> dict[str, list[psutil.Process]]:
        tools = psutil.Process(self.tools.pid)
        return {
            "client": [psutil.Process()],
            "server": [self.server],
            "agent worker": [psutil.Process(agent.pid) for agent in self.agents],
            "tool worker": [tools, *tools.children()],
            "fake model": [self.fake.cpu_process()],
        }

    def close(self) -> None:
        self.aq.close()


def _scripted(steps: int) -> AgentSpec:
    turns = [
        ScriptedTurn(tool_calls=[ScriptedCall(tool=TOOL, arguments={"n": k})])
        for k in range(1, steps + 1)
    ]
    return AgentSpec(kind="scripted", turns=[*turns, ScriptedTurn(text=f"called {TOOL} {steps}")])


def _actionq_run(side: AgentStack, spec: AgentSpec, steps: int) -> dict[str, Any]:
    aq = side.aq
    cid = aq.create_conversation(agent=spec).id
    watch = StreamWatch(aq, [cid])
    processes = side.processes()
    commands, cpu = _commands(aq.store.redis), _cpu(processes)
    start = time.perf_counter()
    aq.send_message(cid, f"{STEPS_KEY}: call the tick tool {steps} times", run=True)
    ended = watch.wait(max(60.0, steps * 2.0))
    client_s = time.perf_counter() - start
    cpu_after, commands_after = _cpu(processes), _commands(aq.store.redis)
    if ended[cid] != "finished":
        raise RuntimeError(f"conversation {cid} ended {ended[cid]}; see {side.stack.base}")
    out = step_times(aq.all_events(cid), steps)
    out["conversation_id"] = cid
    out["client_s"] = client_s
    out["cpu_ms_per_step"] = {
        role: (cpu_after[role] - cpu[role]) * 1000 / (steps + 1) for role in cpu
    }
    delta = {k: v - commands.get(k, 0) for k, v in commands_after.items()}
    out["redis_commands"] = {k: v for k, v in sorted(delta.items()) if v > 0}
    return out


def _side_summary(runs: list[dict[str, Any]], steps: int) -> dict[str, Any]:
    """Every step of every round pooled for the percentiles; runs per round."""
    pooled = {key: [s for run in runs for s in run[key]] for key in ("step_s", "model_side_s")}
    out: dict[str, Any] = {
        "rounds": len(runs),
        "step_ms": _ms(pooled["step_s"]),
        "step_ms_raw": [round(s * 1000, 3) for s in pooled["step_s"]],
        "model_side_ms": _ms(pooled["model_side_s"]),
        "run_s": [run["run_s"] for run in runs],
        "answer_ms": [run["answer_s"] * 1000 for run in runs],
    }
    if "tool_side_s" in runs[0]:
        out["tool_side_ms"] = _ms([s for run in runs for s in run["tool_side_s"]])
        out["client_s"] = [run["client_s"] for run in runs]
        roles = runs[0]["cpu_ms_per_step"]
        out["cpu_ms_per_step"] = {
            role: statistics.median(run["cpu_ms_per_step"][role] for run in runs) for role in roles
        }
        names = {name for run in runs for name in run["redis_commands"]}
        out["redis_commands_per_step"] = {
            name: statistics.median(run["redis_commands"].get(name, 0) for run in runs)
            / (steps + 1)
            for name in sorted(names)
        }
    return out


def _ms(seconds: list[float]) -> dict[str, float]:
    return {k: (v * 1000 if k != "n" else v) for k, v in summary(seconds).items()}


def step_pieces(aq: ActionQ, cid: str, settings: Settings, repeat: int = 20) -> dict[str, Any]:
    """What an agent step does in Python before and after it asks the model
    (``actionq.tasks.step_execution``), each piece timed in this process on
    a finished conversation: ms per call, median of ``repeat``."""
    store = aq.store
    events = store.recent_events(cid, settings.agent_history_events)
    window = safe_window(events)
    first = store.first_user_message(cid)
    stored = store.agent_spec_json(cid)
    assert stored is not None
    pieces: dict[str, Callable[[], object]] = {
        "read the agent spec (HMGET + validate)": lambda: AgentSpec.model_validate_json(
            (store.agent_spec_json(cid) or ("", ""))[0]
        ),
        f"read the window ({len(events)} events: XREVRANGE + parse)": lambda: store.recent_events(
            cid, settings.agent_history_events
        ),
        "the first user message (XRANGE 50 + parse)": lambda: store.first_user_message(cid),
        "cut the window, stuck check": lambda: detect_stuck(safe_window(events)),
        "render the messages": lambda: render_messages(
            window, system_prompt=DEFAULT_SYSTEM_PROMPT, first_user_message=first
        ),
        f"tool specs ({len(registered_tools())} tools: pydantic JSON schema)": lambda: [
            tool.spec() for tool in registered_tools()
        ],
    }
    out = {}
    for name, piece in pieces.items():
        times = []
        for _ in range(repeat):
            start = time.perf_counter()
            piece()
            times.append(time.perf_counter() - start)
        out[name] = statistics.median(times) * 1000
    return {"events": len(events), "ms": out, "total_ms": sum(out.values())}


def per_step(side: AgentStack, bench: AgentBench, log: Log) -> dict[str, Any]:
    loop = InProcessLoop(side.fake.base_url, side.stack.base / "in-process")
    loop.run(f"{STEPS_KEY}: warm-up")  # litellm's first call builds its client
    runs: dict[str, list[dict[str, Any]]] = {"in_process": [], "llm": [], "scripted": []}
    for i in range(bench.step_rounds):
        runs["in_process"].append(loop.run(f"{STEPS_KEY}: call the tick tool"))
        runs["llm"].append(_actionq_run(side, AgentSpec(kind="llm"), bench.steps))
        runs["scripted"].append(_actionq_run(side, _scripted(bench.steps), bench.steps))
        medians = "  ".join(
            f"{name} {statistics.median(r[-1]['step_s']) * 1000:.1f} ms" for name, r in runs.items()
        )
        log(f"  round {i + 1}/{bench.step_rounds}: median step {medians}")
    sides = {
        "in_process": _side_summary(runs["in_process"], bench.steps),
        "actionq_llm": _side_summary(runs["llm"], bench.steps),
        "actionq_scripted": _side_summary(runs["scripted"], bench.steps),
    }
    pieces = step_pieces(side.aq, runs["llm"][-1]["conversation_id"], side.settings)
    log(
        f"  an agent step's Python work on {pieces['events']} events: "
        f"{pieces['total_ms']:.1f} ms ("
        + ", ".join(f"{name} {ms:.2f}" for name, ms in pieces["ms"].items())
        + ")"
    )
    llm, inproc = sides["actionq_llm"]["step_ms"], sides["in_process"]["step_ms"]
    scripted = sides["actionq_scripted"]["step_ms"]
    return {
        "steps": bench.steps,
        "sides": sides,
        "ratio_p50_actionq_llm/in_process": llm["median"] / inproc["median"],
        "extra_ms_p50": llm["median"] - inproc["median"],
        "scripted_p50_ms": scripted["median"],
        "step_pieces": pieces,
    }


class RssSampler:
    """RSS and thread count of some processes every 50 ms, in a thread."""

    def __init__(self, pids: list[int]) -> None:
        self.processes = [psutil.Process(pid) for pid in pids]
        self.t_s: list[float] = []
        self.rss: list[list[int]] = []  # per sample, per process
        self.threads: list[list[int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        start = time.perf_counter()
        while not self._stop.is_set():
            with contextlib.suppress(psutil.NoSuchProcess):
                rss = [p.memory_info().rss for p in self.processes]
                threads = [p.num_threads() for p in self.processes]
                self.t_s.append(time.perf_counter() - start)
                self.rss.append(rss)
                self.threads.append(threads)
            self._stop.wait(0.05)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def result(self, idle: list[int]) -> dict[str, Any]:
        mib = 2**20
        return {
            "processes": len(self.processes),
            "idle": [r / mib for r in idle],
            "peak": [max(sample[i] for sample in self.rss) / mib for i in range(len(idle))],
            "peak_total": max(sum(sample) for sample in self.rss) / mib,
            "threads_peak": [max(sample[i] for sample in self.threads) for i in range(len(idle))],
            "timeline": {
                "t_s": [round(t, 3) for t in self.t_s],
                "rss_mib": [round(sum(sample) / mib, 2) for sample in self.rss],
            },
        }


def _check_conversations(
    aq: ActionQ, conversations: list[str], ended: dict[str, str], start_wall: float
) -> list[float]:
    """Seconds from the start to each finished conversation's answer; every
    finished one made exactly its two calls and one answer."""
    latencies = []
    for cid in conversations:
        events = aq.all_events(cid)
        answer = [e for e in events if isinstance(e, MessageEvent) and e.source == "agent"]
        observed = [e for e in events if isinstance(e, ObservationEvent)]
        if ended[cid] == "finished" and (len(answer) != 1 or len(observed) != 2):
            raise RuntimeError(f"{cid}: {len(observed)} results, {len(answer)} answers")
        if answer:
            latencies.append(_ts(answer[0]) - start_wall)
    return latencies


def concurrent_run(side: AgentStack, bench: AgentBench) -> dict[str, Any]:
    aq, n = side.aq, bench.conversations
    processes, threads = side.shape
    conversations = [aq.create_conversation(agent=AgentSpec(kind="llm")).id for _ in range(n)]
    watch = StreamWatch(aq, conversations)
    pids = [agent.pid for agent in side.agents]
    idle = [psutil.Process(pid).memory_info().rss for pid in pids]
    cpu_of = side.processes()
    cpu = _cpu(cpu_of)
    with RssSampler(pids) as sampler:
        start_wall, start = time.time(), time.perf_counter()
        for i, cid in enumerate(conversations):
            aq.send_message(cid, f"{CONCURRENCY_KEY} #{i}: call tick twice, then answer", run=True)
        submitted = time.perf_counter() - start
        ended = watch.wait(max(120.0, 10 * 3 * bench.delay_s * n / (processes * threads)))
        wall = time.perf_counter() - start
    cpu_after = _cpu(cpu_of)
    statuses = list(ended.values())
    latencies = _check_conversations(aq, conversations, ended, start_wall)
    model_s = 3 * bench.delay_s
    # With fewer threads than conversations every thread stays busy: the
    # n*3 model calls take at least n*3*delay/threads.
    bound = max(model_s, n * model_s / (processes * threads))
    return {
        "processes": processes,
        "threads": threads,
        "conversations": n,
        "outcomes": {status: statuses.count(status) for status in sorted(set(statuses))},
        "submit_s": submitted,
        "wall_s": wall,
        "lower_bound_s": bound,
        "waves": math.ceil(n / (processes * threads)),
        "overhead_s": wall - bound,
        "steps_per_s": 3 * n / wall,
        "conversation_s": summary(latencies) if latencies else None,
        "agent_rss_mib": sampler.result(idle),
        "cpu_s": {role: cpu_after[role] - cpu[role] for role in cpu},
    }


def concurrency(side: AgentStack, bench: AgentBench, log: Log) -> dict[str, Any]:
    check = check_fake_model(side.fake.base_url, bench.conversations, bench.delay_s)
    s = check["seconds"]
    log(
        f"  fake model alone: {check['answered']}/{check['requests']} simultaneous requests "
        f"answered, slowest {s['max'] if s else float('nan'):.2f} s (delay {bench.delay_s} s), "
        f"errors {check['errors'] or 'none'}"
    )
    runs = []
    for processes, threads in bench.worker_shapes:
        if side.shape != (processes, threads):
            side.start_agents(processes, threads)
        run = concurrent_run(side, bench)
        rss, cpu = run["agent_rss_mib"], run["cpu_s"]
        log(
            f"  {bench.conversations} conversations x 3 steps, {processes} agent worker(s) x "
            f"{threads} threads: {run['wall_s']:.2f} s (bound {run['lower_bound_s']:.2f} s), "
            f"{run['outcomes']}, agent CPU {cpu['agent worker']:.1f} s, RSS "
            f"{sum(rss['idle']):.0f} -> {rss['peak_total']:.0f} MiB"
        )
        runs.append(run)
    return {"delay_s": bench.delay_s, "fake_model_check": check, "runs": runs}


def measure_agent(bench: AgentBench, log: Log) -> dict[str, Any]:
    load = [os.getloadavg()[0]]
    with Stack() as stack:
        side = AgentStack(stack, bench)
        try:
            side.start_agents(*bench.worker_shapes[0])
            steps = per_step(side, bench, log)
            conc = concurrency(side, bench, log)
        finally:
            side.close()
    load.append(os.getloadavg()[0])
    return {
        "config": dataclasses.asdict(bench),
        # Other work on the machine shows here (the section's own processes too).
        "loadavg_1min_start_end": load,
        "first_llm_step_after_start_s": side.first_llm_step_s,
        "agent_rss_before_litellm_mib": side.rss_before_litellm_mib,
        "per_step": steps,
        "concurrency": conc,
    }
