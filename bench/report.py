"""Tables for the terminal (rich)."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

__all__ = ["memory_tables", "print_report"]

LABELS = {
    "actionq": "actionq (1 action per conversation)",
    "celery_results": "Celery, Redis result backend",
    "celery_fire_and_forget": "Celery, fire-and-forget",
    "actionq_one_conversation": "actionq, 1 conversation (sequential)",
    "dramatiq": "Dramatiq, fire-and-forget",
    "rq": "RQ, fire-and-forget",
}


THROUGHPUT_NOTES = (
    "tasks/s = n / (first submit -> the client sees the last task done), one client thread.",
    "actionq: n conversations, one noop action each (conversations created before the clock).",
    "actionq, 1 conversation: n actions of ONE conversation run strictly one at a time, each "
    "sent by the previous one's finish, so it measures the per-action round trip, not capacity.",
    "fire-and-forget sides count themselves done with one Redis INCR in the task body.",
)


def _throughput(compare: dict[str, Any]) -> Table:
    table = Table(
        title=f"Throughput: no-op tasks, submit to terminal ({compare['n']} per round, "
        f"{compare['concurrency']} prefork processes, {compare['server']})"
    )
    for column in ("side", "min/s", "median/s", "max/s", "actionq ÷ side", "submit/s"):
        table.add_column(column, justify="left" if column == "side" else "right")
    ratios = compare["ratios"]
    for name, side in compare["throughput"].items():
        label = LABELS.get(name, name)
        if "not_measured" in side:
            table.add_row(label, "", side["not_measured"], "", "", "")
            continue
        rate = side["tasks_per_s"]
        ratio = ratios.get(f"actionq/{name}")
        table.add_row(
            label,
            f"{rate['min']:.0f}",
            f"{rate['median']:.0f}",
            f"{rate['max']:.0f}",
            "" if ratio is None else f"{ratio:.2f}",
            f"{side['submit_per_s']['median']:.0f}",
        )
    return table


def _latency(compare: dict[str, Any]) -> Table:
    table = Table(title="Latency: one no-op on an idle system, submit to terminal (ms)")
    for column in ("side", "n", "p50", "p95", "p99", "max"):
        table.add_column(column, justify="left" if column == "side" else "right")
    for name, s in compare["latency_s"].items():
        label = "actionq (XREAD of the event)" if name == "actionq" else "Celery (result.get())"
        cells = [f"{s[k] * 1000:.2f}" for k in ("median", "p95", "p99", "max")]
        table.add_row(label, str(s["n"]), *cells)
    return table


def _scaling(scaling: dict[str, Any], cores: int | None) -> Table:
    table = Table(title=f"actionq scaling: prefork processes of one worker ({cores} cores)")
    for column in ("processes", "min/s", "median/s", "max/s", "vs 1 process", "submit/s"):
        table.add_column(column, justify="right")
    base = next(iter(scaling.values()))["tasks_per_s"]["median"]
    for c, side in scaling.items():
        rate = side["tasks_per_s"]
        cells = [f"{rate[k]:.0f}" for k in ("min", "median", "max")]
        submit = f"{side['submit_per_s']['median']:.0f}"
        table.add_row(c, *cells, f"{rate['median'] / base:.2f}", submit)
    return table


def _crash(crash: dict[str, Any]) -> Table:
    table = Table(title="Crash detection: kill to AgentErrorEvent (s)")
    for column in ("fault", "n", "min", "median", "p95", "p99", "max"):
        table.add_column(column, justify="left" if column == "fault" else "right")
    for label, key in (
        ("pool child SIGKILL", "child_sigkill_s"),
        ("whole worker SIGKILL", "worker_sigkill_s"),
    ):
        s = crash[key]
        cells = [f"{s[k]:.3f}" for k in ("min", "median", "p95", "p99", "max")]
        table.add_row(label, str(s["n"]), *cells)
    return table


def memory_tables(memory: dict[str, Any]) -> list[Table]:
    """The API's RSS while one client reads a conversation (``bench.api_memory``)."""
    table = Table(
        title=f"API memory (RSS of `python -m app api`, MiB): read a whole conversation "
        f"(idle {memory['rss_idle_mib']:.1f} MiB, "
        f"~{memory['event_bytes']:.0f} B of JSON per event)"
    )
    columns = ("conversation", "read", "history", "before", "peak", "after", "growth", "kept")
    for column in (*columns, "time s", "events/s"):
        table.add_column(column, justify="left" if column in ("conversation", "read") else "right")
    for entry in memory["conversations"]:
        for mode, label in (("pages", f"pages of {memory['page_limit']}"), ("sse", "SSE replay")):
            m = entry[mode]
            table.add_row(
                f"{entry['role']}: {entry['events']:,} events",
                label,
                f"{entry['history_json_mib']:.1f}",
                *(f"{m[k]:.1f}" for k in ("before_mib", "peak_mib", "after_mib")),
                f"{m['growth_mib']:+.1f}",
                f"{m['retained_mib']:+.1f}",
                f"{m['seconds']:.2f}",
                f"{m['events_per_s']:,.0f}",
            )
    flat = memory["flat"]
    verdict = Table(
        title=f"Flat? growth at {memory['events']:,} events minus growth at "
        f"{memory['baseline']:,} events, vs the history's {flat['history_json_mib']:.1f} MiB"
    )
    for column in ("read", "extra growth MiB", "÷ history JSON"):
        verdict.add_column(column, justify="left" if column == "read" else "right")
    for mode, label in (("pages", "pages"), ("sse", "SSE replay")):
        ratio = flat[mode]["extra_growth_vs_history"]
        verdict.add_row(
            label,
            f"{flat[mode]['extra_growth_mib']:+.1f}",
            "" if ratio is None else f"{ratio:.1%}",
        )
    return [table, verdict]


MEMORY_NOTES = (
    "history = the conversation's event JSON (MiB); growth = peak - before; kept = after - "
    "before (after a 0.3 s pause); the warm-up's growth is the one-off cost of the first "
    "requests and of a full page.",
    "Loading the whole history would cost at least its JSON size (as Python objects, about "
    "4 times more); flat means the extra growth is a small fraction of the history, and "
    "the same at any length.",
)


def print_report(result: dict[str, Any], console: Console) -> None:
    machine = result["machine"]
    console.print(
        f"machine: {machine['cores']} cores (os.cpu_count()), {machine['platform']}, "
        f"Python {machine['python']}, Celery {machine['celery']}"
        + ("  [--quick smoke run: numbers are not meaningful]" if result["quick"] else ""),
        highlight=False,
    )
    if "compare" in result:
        console.print(_throughput(result["compare"]))
        for note in THROUGHPUT_NOTES:
            console.print(f"  {note}", highlight=False)
        console.print(_latency(result["compare"]))
    if "scaling" in result:
        console.print(_scaling(result["scaling"], machine["cores"]))
    if "crash_detection" in result:
        console.print(_crash(result["crash_detection"]))
    if "memory" in result:
        for table in memory_tables(result["memory"]):
            console.print(table)
        for note in MEMORY_NOTES:
            console.print(f"  {note}", highlight=False)
