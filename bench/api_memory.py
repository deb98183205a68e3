"""Does the API's memory stay flat while a long conversation is read?

    python -m bench.api_memory [--events 100000] [--baseline 100]

Fills a conversation with ``--events`` events straight into the store
(batched ``submit_action`` script calls; no worker, no Celery message), starts
the HTTP API as its own process (``python -m actionq api``) and samples that
process's RSS (psutil, every 10 ms) while one client

- pages through every event (``GET .../events?after_seq=&limit=1000``), then
- replays the SSE stream from seq 0 (``GET .../events/stream``) until it has
  seen the last seq,

after doing the same for a warm-up conversation of one full page (the first
requests build things once) and for a ``--baseline`` conversation of 100
events. If reading were O(history), the long read's growth would scale with
its history; flat means it is about the same as the baseline's.

Prints a table and writes JSON and a plot to docs/benchmarks/.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import secrets
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import psutil
import redis
from rich.console import Console

from actionq.cli.api_client import ApiClient
from actionq.local.processes import free_port
from actionq.models import ActionEvent, new_id
from actionq.store import ActionStore
from actionq.store.records import fingerprint
from bench.harness import ROOT, Stack, wait_for

__all__ = ["fill_conversation", "measure_api_memory"]

MiB = 1024 * 1024
PAGE_LIMIT = 1000  # the API's maximum
SAMPLE_INTERVAL_S = 0.01
TIMELINE_POINTS = 1500  # the JSON keeps at most this many samples (per-bucket max)


# ---------------------------------------------------------------- filling
@dataclass
class Filled:
    conversation_id: str
    events: int
    json_bytes: int  # sum of the stored event JSON
    seconds: float
    stream_bytes: int | None  # MEMORY USAGE of the stream key, if the server answers


def fill_conversation(
    store: ActionStore, events: int, event_bytes: int = 512, batch: int = 1000
) -> Filled:
    """One conversation with exactly ``events`` events, written fast.

    Calls the store's own ``submit_action`` script (what ``ActionStore.submit_action``
    does, without a round trip per action), ``batch`` calls per pipeline. The
    first submit also appends the ``running`` status event, so ``events - 1``
    actions give ``events`` events. No Celery message is sent: the actions
    stay queued, which does not matter for reading."""
    if events < 2:
        raise ValueError("events must be at least 2 (one action plus its status event)")
    started = time.monotonic()
    cid = store.create_conversation().id
    k = store.keys
    script = store._scripts["submit_action"]  # the benchmark's fast path: a private attribute
    keys_of_conversation = [k.conversation(cid), k.events(cid), k.queue(cid), k.actions(cid)]
    keys_of_conversation += [k.idempotency(cid), k.tool_calls(cid)]
    sample = ActionEvent(
        id=new_id(), tool_name="terminal", tool_call_id="call_" + "0" * 32, action={}
    )
    filler = max(0, event_bytes - len(sample.model_dump_json(exclude={"seq"})) - 40)
    thought = ("the agent thinks about the next step " * (filler // 37 + 1))[:filler]
    json_bytes = 0
    actions = events - 1
    for start in range(0, actions, batch):
        pipe = store.redis.pipeline(transaction=False)
        for i in range(start, min(start + batch, actions)):
            action_id = new_id()
            arguments = {"command": f"echo step {i}"}
            event = ActionEvent(
                id=action_id,
                tool_name="terminal",
                tool_call_id=f"call_{action_id.replace('-', '')}",
                action=arguments,
                thought=thought,
            )
            payload = event.model_dump_json(exclude={"seq"})
            json_bytes += len(payload)
            pipe.hset(k.action_index(), action_id, cid)
            script(
                keys=[*keys_of_conversation, k.action(cid, action_id)],
                args=[
                    action_id,
                    "",
                    event.tool_call_id,
                    payload,
                    event.timestamp,
                    new_id(),
                    "terminal",
                    json.dumps(arguments),
                    fingerprint("terminal", arguments),
                    "",
                ],
                client=pipe,
            )
        replies = pipe.execute()
        refused = [r for r in replies[1::2] if r[0] != "created"]
        if refused:
            raise RuntimeError(f"submit_action refused while filling: {refused[0]}")
    last_seq = store.get_conversation(cid).last_seq
    if last_seq != events:
        raise RuntimeError(f"expected {events} events, the conversation has {last_seq}")
    stream_bytes: int | None = None
    # MEMORY USAGE is optional here; the JSON size is what counts.
    with contextlib.suppress(redis.RedisError):
        stream_bytes = store.redis.memory_usage(k.events(cid), samples=0)
    return Filled(cid, events, json_bytes, time.monotonic() - started, stream_bytes)


# ---------------------------------------------------------------- the API process
def _answers(url: str) -> bool:
    try:
        httpx.get(f"{url}/health", timeout=1)  # 503 without workers: still an answer
    except httpx.HTTPError:
        return False
    return True


def start_api(stack: Stack, key: str) -> tuple[Any, str]:
    """``python -m actionq api`` as its own process (stopped by ``stack.close()``)."""
    port = free_port()
    process = stack.spawn(
        [sys.executable, "-m", "actionq", "api"],
        "api",
        ACTIONQ_API_KEYS=key,
        ACTIONQ_API_PORT=str(port),
    )
    url = f"http://127.0.0.1:{port}"
    wait_for(lambda: process.poll() is not None or _answers(url), 60, "the API", 0.05)
    if process.poll() is not None:
        raise RuntimeError(f"the API exited ({process.returncode}); see {stack.base / 'api.log'}")
    return process, url


# ---------------------------------------------------------------- RSS sampling
@dataclass
class Phase:
    name: str
    start: float
    end: float = 0.0
    before: int = 0
    after: int = 0
    peak: int = 0


@dataclass
class RssSampler:
    """Samples one process's RSS every ``interval`` seconds in a thread."""

    pid: int
    interval: float = SAMPLE_INTERVAL_S
    samples: list[tuple[float, int]] = field(default_factory=list)
    phases: list[Phase] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.process = psutil.Process(self.pid)
        self.t0 = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        self._thread.start()

    def rss(self) -> int:
        return int(self.process.memory_info().rss)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append((time.monotonic() - self.t0, self.rss()))
            self._stop.wait(self.interval)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def settled(self, seconds: float = 0.3) -> int:
        """RSS after a short pause (what the process keeps, not a transient)."""
        time.sleep(seconds)
        return self.rss()

    @contextmanager
    def phase(self, name: str) -> Iterator[Phase]:
        before = self.settled()
        phase = Phase(name, time.monotonic() - self.t0, before=before)
        yield phase
        phase.end = time.monotonic() - self.t0
        phase.after = self.settled()
        during = [rss for t, rss in self.samples if phase.start <= t]
        phase.peak = max([before, phase.after, *during])
        self.phases.append(phase)

    def timeline(self) -> dict[str, list[float]]:
        """At most TIMELINE_POINTS samples, keeping each bucket's maximum (peaks survive)."""
        step = max(1, -(-len(self.samples) // TIMELINE_POINTS))
        t: list[float] = []
        rss: list[float] = []
        for i in range(0, len(self.samples), step):
            bucket = self.samples[i : i + step]
            t.append(round(bucket[0][0], 3))
            rss.append(round(max(r for _, r in bucket) / MiB, 2))
        return {"t_s": t, "rss_mib": rss}


# ---------------------------------------------------------------- readers
def read_pages(client: ApiClient, conversation_id: str, last_seq: int) -> int:
    """Every event, ``PAGE_LIMIT`` per request; keeps nothing. Returns the requests."""
    after, expected, requests = 0, 1, 0
    while True:
        page = client.events(conversation_id, after, PAGE_LIMIT)
        requests += 1
        for item in page["items"]:
            if item["seq"] != expected:
                raise RuntimeError(f"page gap: expected seq {expected}, got {item['seq']}")
            expected += 1
        if page["next_after_seq"] is None:
            break
        after = page["next_after_seq"]
    if expected - 1 != last_seq:
        raise RuntimeError(f"paged {expected - 1} events, expected {last_seq}")
    return requests


def read_stream(client: ApiClient, conversation_id: str, last_seq: int) -> None:
    """Replay the SSE stream from seq 0; hang up once ``last_seq`` arrived."""
    stream: Any = client.stream(conversation_id, after_seq=0)  # a generator: close() hangs up
    expected = 1
    try:
        for item in stream:
            if item["seq"] != expected:
                raise RuntimeError(f"stream gap: expected seq {expected}, got {item['seq']}")
            if expected == last_seq:
                return
            expected += 1
    finally:
        stream.close()
    raise RuntimeError(f"the stream ended after {expected - 1} of {last_seq} events")


def _phase_result(phase: Phase, events: int, seconds: float, **extra: Any) -> dict[str, Any]:
    return {
        "before_mib": phase.before / MiB,
        "peak_mib": phase.peak / MiB,
        "after_mib": phase.after / MiB,
        "growth_mib": (phase.peak - phase.before) / MiB,
        "retained_mib": (phase.after - phase.before) / MiB,
        "seconds": seconds,
        "events_per_s": events / seconds if seconds > 0 else None,
    } | extra


# ---------------------------------------------------------------- the measurement
def _read(
    sampler: RssSampler, client: ApiClient, role: str, filled: Filled, console: Console
) -> dict[str, Any]:
    """Page through, then replay over SSE, one conversation; RSS of each read."""
    n = filled.events
    entry: dict[str, Any] = {
        "role": role,
        "events": n,
        "history_json_mib": filled.json_bytes / MiB,
        "stream_memory_mib": None if filled.stream_bytes is None else filled.stream_bytes / MiB,
        "fill_s": filled.seconds,
    }
    with sampler.phase(f"{role}: {n:,} events, pages") as phase:
        t = time.monotonic()
        requests = read_pages(client, filled.conversation_id, n)
        seconds = time.monotonic() - t
    entry["pages"] = _phase_result(phase, n, seconds, requests=requests)
    with sampler.phase(f"{role}: {n:,} events, SSE") as phase:
        t = time.monotonic()
        read_stream(client, filled.conversation_id, n)
        seconds = time.monotonic() - t
    entry["sse"] = _phase_result(phase, n, seconds)
    console.print(
        f"  {role}, {n:,} events: pages {entry['pages']['seconds']:.1f}s "
        f"({entry['pages']['growth_mib']:+.1f} MiB), SSE {seconds:.1f}s "
        f"({entry['sse']['growth_mib']:+.1f} MiB)",
        highlight=False,
    )
    return entry


def measure_api_memory(
    events: int = 100_000,
    baseline: int = 100,
    event_bytes: int = 512,
    console: Console | None = None,
) -> dict[str, Any]:
    """Fill, start the API, then read (pages, then SSE) three conversations in
    turn: a warm-up of one full page, the baseline, the long one."""
    console = console or Console()
    key = secrets.token_urlsafe(16)
    with Stack() as stack:
        store = ActionStore.from_url(stack.url)
        filled: dict[str, Filled] = {}
        for role, n in (("warm-up", PAGE_LIMIT), ("baseline", baseline), ("long", events)):
            filled[role] = f = fill_conversation(store, n, event_bytes)
            console.print(
                f"  filled the {role} conversation: {n:,} events "
                f"({f.json_bytes / MiB:.1f} MiB of event JSON) in {f.seconds:.1f}s",
                highlight=False,
            )
        store.redis.close()
        process, url = start_api(stack, key)
        sampler = RssSampler(process.pid)
        client = ApiClient(url, key, timeout=60)
        try:
            started = sampler.rss()
            idle = sampler.settled(0.5)
            # The first requests build things once (imports, pydantic
            # serializers, malloc arenas for a full page): not history.
            conversations = [_read(sampler, client, role, f, console) for role, f in filled.items()]
        finally:
            client.close()
            sampler.stop()
            stack.stop(process)
    return {
        "events": events,
        "baseline": baseline,
        "event_bytes": filled["long"].json_bytes / (events - 1),
        "page_limit": PAGE_LIMIT,
        "api": "python -m actionq api (uvicorn, one process)",
        "rss_started_mib": started / MiB,
        "rss_idle_mib": idle / MiB,
        "conversations": conversations,
        "flat": flatness(conversations),
        "timeline": sampler.timeline() | {"phases": [asdict(p) for p in sampler.phases]},
    }


def flatness(conversations: list[dict[str, Any]]) -> dict[str, Any]:
    """Extra growth of the long read over the baseline's, next to the history's size."""
    by_role = {c["role"]: c for c in conversations}
    long, short = by_role["long"], by_role["baseline"]
    history = long["history_json_mib"]
    out: dict[str, Any] = {"history_json_mib": history}
    for mode in ("pages", "sse"):
        extra = long[mode]["growth_mib"] - short[mode]["growth_mib"]
        out[mode] = {
            "extra_growth_mib": extra,
            "extra_growth_vs_history": extra / history if history else None,
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000, help="events in the long one")
    parser.add_argument("--baseline", type=int, default=100, help="events in the short one")
    parser.add_argument("--event-bytes", type=int, default=512, help="approx. JSON per event")
    parser.add_argument("--out", type=Path, default=ROOT / "docs/benchmarks/api_memory.json")
    args = parser.parse_args()

    from bench.plots import memory_plot
    from bench.report import MEMORY_NOTES, memory_tables

    console = Console(width=None if sys.stdout.isatty() else 120)
    console.print(
        f"API memory: {args.events:,} events vs {args.baseline:,} "
        f"(pages of {PAGE_LIMIT}, then the SSE replay)"
    )
    started = time.monotonic()
    memory = measure_api_memory(args.events, args.baseline, args.event_bytes, console)
    for table in memory_tables(memory):
        console.print(table)
    for note in MEMORY_NOTES:
        console.print(f"  {note}", highlight=False)
    result = {
        "date": datetime.now().isoformat(timespec="seconds"),
        "machine": {
            "cores": psutil.cpu_count(),
            "platform": f"{platform.system()} {platform.machine()}",
            "python": platform.python_version(),
        },
        "wall_s": time.monotonic() - started,
        "memory": memory,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    plot = args.out.with_suffix(".png")
    memory_plot(memory, plot, "")
    console.print(f"wrote {args.out}, {plot} in {result['wall_s']:.0f}s")


if __name__ == "__main__":
    main()
