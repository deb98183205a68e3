"""Tables for the terminal (rich)."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.table import Table

__all__ = [
    "agent_notes",
    "agent_tables",
    "crash_comparison",
    "crash_notes",
    "memory_tables",
    "openhands_notes",
    "openhands_table",
    "print_report",
    "topology_table",
]

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
    """Seconds from the kill to the outcome, every side with samples."""
    table = Table(title="Crash detection: seconds from the kill to the outcome")
    for column in ("fault", "side", "outcome", "n", "min", "median", "p95", "p99", "max"):
        left = column in ("fault", "side", "outcome")
        table.add_column(column, justify="left" if left else "right")
    raw = crash.get("raw_celery", {})
    rows: list[tuple[str, str, str, dict[str, Any] | None]] = [
        ("pool child SIGKILL", "actionq", "AgentErrorEvent", crash["child_sigkill_s"]),
    ]
    if "child_sigkill" in raw:
        rows.append(("", "Celery", "FAILURE seen by the client", raw["child_sigkill"]["seconds"]))
    rows.append(("whole worker SIGKILL", "actionq", "AgentErrorEvent", crash["worker_sigkill_s"]))
    if "worker_sigkill" in raw:
        vt = raw["worker_sigkill"]["config"]["visibility_timeout_s"]
        rows.append(
            (
                "",
                f"Celery (visibility {vt} s)",
                "the body runs again",
                raw["worker_sigkill"]["redelivered_s"],
            )
        )
    for fault, side, outcome, s in rows:
        if s is None:
            table.add_row(fault, side, outcome, "0", "", "", "", "", "")
            continue
        cells = [f"{s[k]:.3f}" for k in ("min", "median", "p95", "p99", "max")]
        table.add_row(fault, side, outcome, str(s["n"]), *cells)
    return table


def _runs(runs: list[int]) -> str:
    """Body runs per task: "1" when all ran once, else the range and the rounds."""
    if not runs:
        return ""
    low, high = min(runs), max(runs)
    return f"{low}" if low == high else f"{low}-{high} ({len(runs)} tasks)"


def _median_max(s: dict[str, Any] | None) -> str:
    return "" if s is None else f"{s['median']:.2f} / {s['max']:.2f}"


def _times(n: int) -> str:
    return {1: "once", 2: "twice"}.get(n, f"{n} times")


def crash_comparison(crash: dict[str, Any]) -> Table:
    """One row per (situation, side): actionq's outcome beside raw Celery's."""
    table = Table(title="Crash handling: actionq vs raw Celery (same server, same run)")
    columns = ("situation", "side", "time to outcome s\n(median / max)", "body runs", "outcome")
    for column in columns:
        table.add_column(column, justify="right" if column.startswith("time") else "left")
    raw = crash["raw_celery"]
    runs = crash.get("body_runs", {})
    table.add_row(
        "pool child SIGKILL",
        "actionq",
        _median_max(crash["child_sigkill_s"]),
        _runs(runs.get("child", [])),
        "AgentErrorEvent worker_lost, conversation error",
    )
    child = raw["child_sigkill"]
    outcomes = child["outcomes"]
    table.add_row(
        "",
        "Celery, reject_on_worker_lost=False",
        _median_max(child["seconds"]),
        _runs(child["body_runs"]),
        next(iter(outcomes))
        if len(outcomes) == 1
        else ", ".join(f"{k} in {v} rounds" for k, v in outcomes.items()),
    )
    poison = raw["child_sigkill_reject_on_worker_lost"]
    window, n = poison["window_s"], poison["body_runs_in_window"]
    table.add_row(
        "",
        "Celery, reject_on_worker_lost=True",
        f"{poison['final_after_s']:.2f}" if poison["final_state_seen"] else "never",
        f"{n} in {window:.0f} s",
        f"ran {_times(n)} in {window:.0f} s, "
        + (
            "then final"
            if poison["final_state_seen"]
            else f"never final ({poison['state_when_stopped']})"
        ),
    )
    table.add_row(
        "whole worker SIGKILL",
        "actionq",
        _median_max(crash["worker_sigkill_s"]),
        _runs(runs.get("worker", [])),
        "AgentErrorEvent lease_expired (sweeper), conversation error",
    )
    node = raw["worker_sigkill"]
    redelivered = node["redelivered_s"]
    counts = sorted(set(node["body_runs"]))
    if redelivered is None:
        outcome = f"not redelivered within {node['bound_s']:.0f} s"
    else:
        ran = _times(counts[0]) if len(counts) == 1 else "/".join(map(str, counts)) + " times"
        outcome = f"redelivered after {redelivered['median']:.1f} s, ran {ran}"
        if node["not_redelivered"]:
            outcome += f"; {node['not_redelivered']} not redelivered in {node['bound_s']:.0f} s"
    table.add_row(
        "(a new worker started)",
        f"Celery, visibility_timeout {node['config']['visibility_timeout_s']} s",
        _median_max(redelivered),
        _runs(node["body_runs"]),
        outcome,
    )
    return table


def crash_notes(crash: dict[str, Any]) -> list[str]:
    """How to read ``crash_comparison``."""
    vt = crash["raw_celery"]["worker_sigkill"]["config"]["visibility_timeout_s"]
    aq_vt = crash["settings"].get("visibility_timeout", "its default")
    return [
        "actionq: seconds from the kill to the AgentErrorEvent's timestamp. Celery: from the "
        "kill (the body writes the time, then kills its process) until the client, polling the "
        "result every 5 ms, sees it final; for a whole worker, until the body starts again.",
        "Celery: acks_late, Redis result backend, prefork --concurrency 1 like actionq's worker. "
        f"Whole worker: visibility_timeout {vt} s, not the {aq_vt} s actionq's run keeps (actionq "
        "does not wait for it; with it, Celery would redeliver only after that long).",
        "body runs: lines the task body appended to its own file, counted at the end of each "
        "measurement (for Celery's worker kill, 2 s after the body ran again).",
    ]


def memory_tables(memory: dict[str, Any]) -> list[Table]:
    """The API's RSS while one client reads a conversation (``bench.api_memory``)."""
    table = Table(
        title=f"API memory (RSS of `python -m actionq api`, MiB): read a whole conversation "
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


CPU_ROLES = ("agent worker", "tool worker", "server")
AGENT_SIDES = {
    "in_process": "in-process: litellm + tool function",
    "actionq_llm": "actionq, LLM agent",
    "actionq_scripted": "actionq, scripted agent",
}


def _agent_steps(per_step: dict[str, Any]) -> Table:
    table = Table(
        title=f"Agent loop: one conversation of {per_step['steps']} steps (a no-op tool call "
        "each) and an answer, fake model without delay (ms per step)"
    )
    columns = ("side", "n", "p50", "p99", "model side p50", "tool side p50", "run s")
    for column in (*columns, "÷ in-process", "CPU ms: agent", "tool", "server"):
        table.add_column(column, justify="left" if column == "side" else "right")
    base = per_step["sides"]["in_process"]["step_ms"]["median"]
    for name, side in per_step["sides"].items():
        step = side["step_ms"]
        cpu = side.get("cpu_ms_per_step", {})
        tool = side.get("tool_side_ms")
        table.add_row(
            AGENT_SIDES.get(name, name),
            str(step["n"]),
            f"{step['median']:.1f}",
            f"{step['p99']:.1f}",
            f"{side['model_side_ms']['median']:.1f}",
            "" if tool is None else f"{tool['median']:.1f}",
            f"{statistics.median(side['run_s']):.2f}",
            f"{step['median'] / base:.2f}",
            *(f"{cpu[r]:.1f}" if r in cpu else "" for r in CPU_ROLES),
        )
    return table


def _agent_concurrency(conc: dict[str, Any]) -> Table:
    runs = conc["runs"]
    table = Table(
        title=f"Agent loop: {runs[0]['conversations']} conversations x 3 steps (2 tool calls, an "
        f"answer), the model {conc['delay_s']:g} s per reply"
    )
    columns = ("agent workers", "waves", "wall s", "bound s", "steps/s", "conv. p50", "max")
    for column in (*columns, "RSS MiB idle→peak", "threads", "CPU s: agent", "tool", "server"):
        table.add_column(column, justify="left" if column == "agent workers" else "right")
    for run in runs:
        rss, cpu, c = run["agent_rss_mib"], run["cpu_s"], run["conversation_s"] or {}
        table.add_row(
            f"{run['processes']} x {run['threads']}",
            str(run["waves"]),
            f"{run['wall_s']:.2f}",
            f"{run['lower_bound_s']:.2f}",
            f"{run['steps_per_s']:.0f}",
            f"{c.get('median', float('nan')):.2f}",
            f"{c.get('max', float('nan')):.2f}",
            " + ".join(f"{i:.0f}→{p:.0f}" for i, p in zip(rss["idle"], rss["peak"], strict=True)),
            " + ".join(str(t) for t in rss["threads_peak"]),
            *(f"{cpu[r]:.2f}" for r in CPU_ROLES),
        )
    return table


def agent_tables(agent: dict[str, Any]) -> list[Table]:
    return [_agent_steps(agent["per_step"]), _agent_concurrency(agent["concurrency"])]


def agent_notes(agent: dict[str, Any]) -> list[str]:
    per_step, conc = agent["per_step"], agent["concurrency"]
    llm = per_step["sides"]["actionq_llm"]
    commands = llm["redis_commands_per_step"]
    check = conc["fake_model_check"]
    slowest = check["seconds"]["max"] if check["seconds"] else float("nan")
    outcomes = "; ".join(
        f"{run['processes']} x {run['threads']}: {run['outcomes']}" for run in conc["runs"]
    )
    first = max(agent["first_llm_step_after_start_s"])
    pieces = per_step["step_pieces"]
    parts = ", ".join(f"{name} {ms:.2f}" for name, ms in pieces["ms"].items())
    return [
        "step k: from the event that ended step k-1 (the user's message for k = 1, else call "
        "k-1's ObservationEvent) to call k's ObservationEvent; model side: to call k's "
        "ActionEvent (made in the agent worker when the model answered), tool side: the rest.",
        f"actionq LLM ÷ in-process (p50): {per_step['ratio_p50_actionq_llm/in_process']:.2f}, "
        f"{per_step['extra_ms_p50']:+.1f} ms per step; the scripted agent's "
        f"{per_step['scripted_p50_ms']:.1f} ms is the durable loop without a model: two Celery "
        f"hops (agent queue, tool queue), {commands.get('evalsha', 0):.1f} Lua scripts and "
        f"{sum(commands.values()):.0f} Redis commands per step (those inside scripts included).",
        f"An agent step's own Python work, each piece timed in the client on the last "
        f"conversation ({pieces['events']} events): {pieces['total_ms']:.1f} ms: {parts}.",
        "bound: the model's time alone, 3 replies x delay, or with fewer threads than "
        "conversations n x 3 x delay / threads (all busy); waves: conversations / threads.",
        f"An agent worker's first model call after it started took up to {first:.1f} s "
        "(litellm is imported then); the warm-up, not timed, paid it.",
        f"fake model alone: {check['answered']}/{check['requests']} simultaneous requests, slowest "
        f"{slowest:.2f} s for a {check['delay_s']:g} s delay, errors {check['errors'] or 'none'}"
        f"{'' if check['ok'] else '  [NOT OK: the concurrency numbers measure the fake model]'}. "
        f"Outcomes: {outcomes}.",
    ]


TOPOLOGY_LABELS = {
    "single": "(a) one server, direct enqueue",
    "single_rabbitmq": "(b) one server, RabbitMQ",
    "cluster_no_acks": "(c) cluster, RabbitMQ, acks off",
    "cluster_acks": "(d) cluster, RabbitMQ, acks on",
    "replicated_no_acks": "(e) primary + replica, acks off",
    "replicated_acks": "(e) primary + replica, acks on",
}


def topology_table(topology: dict[str, Any]) -> Table:
    """tasks/s per store layout, and the ratios to (a), (b) and the no-acks twin."""
    load = topology.get("loadavg_1min_start_end")
    table = Table(
        title=f"Throughput by store layout: no-op tasks, submit to terminal "
        f"({topology['n']} per round, {topology['concurrency']} prefork processes per worker"
        + ("" if load is None else f"; load average {load[0]:.1f} → {load[1]:.1f}")
        + ")"
    )
    columns = ("layout", "min/s", "median/s", "max/s", "÷ (a)", "÷ (b)", "÷ off")
    for column in (*columns, "paired", "WAITs", "submit/s"):
        table.add_column(column, justify="left" if column == "layout" else "right")
    for name, side in topology["throughput"].items():
        label = TOPOLOGY_LABELS.get(name, name)
        if "not_measured" in side:
            table.add_row(label, "", side["not_measured"], *[""] * 7)
            continue
        rate, ratios = side["tasks_per_s"], topology["ratios"].get(name, {})
        table.add_row(
            label,
            *(f"{rate[k]:.0f}" for k in ("min", "median", "max")),
            *(
                f"{ratios[k]:.2f}" if k in ratios else ""
                for k in ("single", "single_rabbitmq", "no_acks_twin", "no_acks_twin_paired")
            ),
            f"{side['wait_calls_per_action']:.2f}",
            f"{side['submit_per_s']['median']:.0f}",
        )
    return table


TOPOLOGY_NOTES = (
    "cluster: 3 primaries, a replica each; (e): direct enqueue on the primary. acks on: "
    "ACTIONQ_REPLICA_ACKS unset (1 where a primary has a replica); off: 0.",
    "÷ columns: ratios of medians; paired: the median over rounds of the round's rate over its "
    "twin's, run just before it (less sensitive to the machine's drift).",
    "Every side: its own worker (same prefork processes), key prefix and queue, all running "
    "for the whole section; rounds alternate side after side.",
    "WAITs: WAIT commands the side's store ran during its rounds, per action (the "
    "conversation's creation and any heartbeat included); acks on: one per write step, off: 0.",
    "A Cluster store cannot use direct enqueue, so (c) and (d) are compared with (b), one "
    "server with the same RabbitMQ broker.",
)


def _seconds(value: float | None, scale: float = 1.0, digits: int = 2) -> str:
    return "never" if value is None else f"{value * scale:.{digits}f}"


def openhands_table(openhands: dict[str, Any]) -> Table:
    """Each figure for actionq and OpenHands' agent-server, and the ratio."""
    table = Table(
        title=f"Against OpenHands' agent-server: the same RemoteConversation client, "
        f"{openhands['steps']} terminal steps per conversation"
    )
    for column in ("figure", "actionq", "agent-server", "actionq ÷ agent-server"):
        table.add_column(column, justify="left" if column == "figure" else "right")
    ratios, steps = openhands["ratios"], openhands["step_s"]
    a, o = "actionq", "agent_server"

    def row(label: str, ours: str, theirs: str, ratio: float | None) -> None:
        table.add_row(label, ours, theirs, "" if ratio is None else f"{ratio:.2f}")

    for q in ("p50", "p90"):
        row(f"ms per step, {q} (lower is better)", _seconds(steps[a][q], 1000, 0),
            _seconds(steps[o][q], 1000, 0), ratios[f"step_{q}"])  # fmt: skip
    for n in openhands["batches"]:
        ours, theirs = openhands["batch"][a][str(n)], openhands["batch"][o][str(n)]
        row(f"{n} conversation(s) at once, wall s (lower)", _seconds(ours["wall_s"]),
            _seconds(theirs["wall_s"]), ratios[f"batch_{n}_wall"])  # fmt: skip
    memory = openhands["memory"]
    for kind in ("rss", "pss"):
        row(f"server {kind.upper()} MiB after the batch (lower)",
            f"{memory[a][f'{kind}_mib']:.0f}", f"{memory[o][f'{kind}_mib']:.0f}",
            ratios[kind])  # fmt: skip
    if "start_s" in openhands:
        row("start to healthy, s (lower)", _seconds(openhands["start_s"][a], digits=1),
            _seconds(openhands["start_s"][o], digits=1), None)  # fmt: skip
    crash = openhands["crash"]
    parent = crash.get("agent_server_shell_parent")
    for label, key in (("run() ends (raises the error)", "run_returned_after_s"),
                       ("AgentErrorEvent on the socket", "socket_error_after_s")):  # fmt: skip
        ratio = ratios["crash_to_run_error"] if key == "run_returned_after_s" else None
        row(f"crash → {label}, s (lower)", _seconds(crash[a][key]),
            _seconds(crash[o][key]) + " (restarted)", ratio)  # fmt: skip
        if parent is not None:
            seen = _seconds(parent[key]) + f" ({parent['client_status']})"
            row(f"  agent-server, its shell's parent killed: {label}", "", seen, None)
    return table


def openhands_notes(openhands: dict[str, Any]) -> list[str]:
    crash, memory = openhands["crash"], openhands["memory"]
    server = crash["agent_server"]
    notes = [
        "step: from run() (or the previous ObservationEvent) to the next ObservationEvent "
        "reaching the client: the model call, the tool call, the events back.",
        f"memory: the server's process tree with every conversation of the section kept "
        f"(not deleted), after the batch of {memory['actionq']['after_batch_of']}; "
        "agent-server's includes its tmux servers and shells.",
    ]
    for side, seen in crash.items():
        notes.append(
            f"crash, {side}: the shell's parent was {seen['shell_parent']!r}; after it: "
            f"client status {seen['client_status']}, server status {seen['server_status']}; "
            f"the call's error: {seen['error_for_the_call']!r}"
            + (
                f"; its observation: {seen['observation_of_the_call'][:200]}"
                if seen.get("observation_of_the_call")
                else ""
            )
        )
    if "restarted_after_death_s" in server:
        notes.append(
            f"agent-server was SIGKILLed by its tool call and restarted at once (as a "
            f"supervisor would); healthy again {server['restart_to_healthy_s']:.1f} s later. "
            "Without a restart the client never sees the error: nothing else would write it."
        )
    return notes


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
        crash = result["crash_detection"]
        console.print(_crash(crash))
        if "raw_celery" in crash:
            console.print(crash_comparison(crash))
            for note in crash_notes(crash):
                console.print(f"  {note}", highlight=False)
    if "memory" in result:
        _print(console, memory_tables(result["memory"]), MEMORY_NOTES)
    if "agent" in result:
        _print(console, agent_tables(result["agent"]), agent_notes(result["agent"]))
    if "topology" in result:
        _print(console, [topology_table(result["topology"])], TOPOLOGY_NOTES)
    if "openhands" in result:
        openhands = result["openhands"]
        if "not_measured" in openhands:
            console.print(f"openhands: {openhands['not_measured']}", highlight=False)
        else:
            _print(console, [openhands_table(openhands)], openhands_notes(openhands))


def _print(console: Console, tables: list[Table], notes: Sequence[str]) -> None:
    for table in tables:
        console.print(table)
    for note in notes:
        console.print(f"  {note}", highlight=False)
