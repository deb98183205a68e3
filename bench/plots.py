"""PNG plots of a result (matplotlib, no display needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["agent_plot", "memory_plot", "write_plots"]


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _throughput(plt: Any, compare: dict[str, Any], path: Path, note: str) -> None:
    from bench.report import LABELS

    sides = {k: v for k, v in compare["throughput"].items() if "tasks_per_s" in v}
    names = list(sides)[::-1]
    medians = [sides[n]["tasks_per_s"]["median"] for n in names]
    low = [m - sides[n]["tasks_per_s"]["min"] for n, m in zip(names, medians, strict=True)]
    high = [sides[n]["tasks_per_s"]["max"] - m for n, m in zip(names, medians, strict=True)]
    fig, ax = plt.subplots(figsize=(8, 0.6 * len(names) + 1.5))
    colors = ["tab:blue" if n.startswith("actionq") else "tab:gray" for n in names]
    ax.barh([LABELS.get(n, n) for n in names], medians, xerr=[low, high], color=colors, capsize=4)
    ax.set_xlabel("no-op tasks per second (median; bars: min to max over rounds)")
    ax.set_title(f"Throughput, {compare['concurrency']} prefork processes{note}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _latency(plt: Any, compare: dict[str, Any], path: Path, note: str) -> None:
    quantiles = ("median", "p95", "p99")
    fig, ax = plt.subplots(figsize=(6, 4))
    width = 0.38
    for i, (name, s) in enumerate(compare["latency_s"].items()):
        xs = [q + i * width for q in range(len(quantiles))]
        ax.bar(xs, [s[q] * 1000 for q in quantiles], width, label=name)
    ax.set_xticks([q + width / 2 for q in range(len(quantiles))], ["p50", "p95", "p99"])
    ax.set_ylabel("ms, submit to terminal")
    ax.set_title(f"Latency of one no-op, idle system{note}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _scaling(plt: Any, scaling: dict[str, Any], cores: int | None, path: Path, note: str) -> None:
    procs = [int(c) for c in scaling]
    rates = [scaling[c]["tasks_per_s"] for c in scaling]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(procs, [r["median"] for r in rates], marker="o", label="actionq, median")
    ax.fill_between(procs, [r["min"] for r in rates], [r["max"] for r in rates], alpha=0.2)
    ax.plot(procs, [rates[0]["median"] * p / procs[0] for p in procs], "--", label="linear")
    if cores:
        ax.axvline(cores, color="gray", linestyle=":", label=f"{cores} cores")
    ax.set_xticks(procs)
    ax.set_ylim(bottom=0)
    ax.set_xlabel("prefork processes")
    ax.set_ylabel("no-op actions per second")
    ax.set_title(f"actionq scaling{note}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _crash(plt: Any, crash: dict[str, Any], path: Path, note: str) -> None:
    """Per fault, actionq's kill-to-AgentErrorEvent beside raw Celery's kill-to-outcome."""
    raw = crash.get("raw_celery", {})
    panels: list[tuple[str, list[tuple[str, list[float]]]]] = [
        ("pool child SIGKILL", [("actionq\nAgentErrorEvent", crash["raw"]["child"])]),
        ("whole worker SIGKILL", [("actionq\nAgentErrorEvent", crash["raw"]["worker"])]),
    ]
    if "child_sigkill" in raw:
        panels[0][1].append(("raw Celery\nFAILURE seen", raw["child_sigkill"]["raw"]["seconds"]))
    if "worker_sigkill" in raw:
        vt = raw["worker_sigkill"]["config"]["visibility_timeout_s"]
        redelivered = raw["worker_sigkill"]["raw"]["redelivered_s"]
        panels[1][1].append((f"raw Celery\nruns again\n(vt {vt} s)", redelivered))
    fig, axes = plt.subplots(1, 2, figsize=(9, 4))
    for ax, (title, boxes) in zip(axes, panels, strict=True):
        shown = [(label, values) for label, values in boxes if values]
        ax.boxplot([values for _, values in shown])
        for x, (_, values) in enumerate(shown, start=1):
            ax.plot([x] * len(values), values, ".", alpha=0.5)
        ax.set_xticks(range(1, len(shown) + 1), [label for label, _ in shown])
        ax.set_title(title)
        ax.set_ylim(bottom=0)
        ax.set_ylabel("s, kill to outcome")
    fig.suptitle(f"Crash detection: actionq and raw Celery{note}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def memory_plot(memory: dict[str, Any], path: Path, note: str) -> None:
    """The API's RSS over the run, each read shaded and labelled."""
    plt = _pyplot()
    timeline = memory["timeline"]
    fig, ax = plt.subplots(figsize=(9, 4))
    ax.plot(timeline["t_s"], timeline["rss_mib"], color="tab:blue", linewidth=1)
    colors = ("tab:orange", "tab:green")
    for i, phase in enumerate(timeline["phases"]):
        ax.axvspan(phase["start"], phase["end"], color=colors[i % 2], alpha=0.2)
        ax.text(
            (phase["start"] + phase["end"]) / 2,
            0.02,
            phase["name"],
            transform=ax.get_xaxis_transform(),
            rotation=90,
            ha="center",
            va="bottom",
            fontsize=8,
        )
    history = memory["flat"]["history_json_mib"]
    ax.axhline(
        memory["rss_idle_mib"] + history,
        color="tab:red",
        linestyle="--",
        linewidth=1,
        label=f"idle + the long history's JSON ({history:.0f} MiB): a floor for loading it all",
    )
    ax.legend(loc="upper left", fontsize=8)
    top = max(max(timeline["rss_mib"]) * 1.3, (memory["rss_idle_mib"] + history) * 1.15)
    ax.set_ylim(bottom=0, top=top)
    ax.set_xlabel("s since the API answered")
    ax.set_ylabel("RSS of the API process, MiB")
    ax.set_title(
        f"API memory while reading {memory['events']:,} events ({history:.0f} MiB of JSON){note}"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def agent_plot(agent: dict[str, Any], path: Path, note: str) -> None:
    """Left: every step's time per side; right: the agent workers' RSS in each
    concurrency run."""
    from bench.report import AGENT_SIDES

    plt = _pyplot()
    per_step, runs = agent["per_step"], agent["concurrency"]["runs"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    sides = per_step["sides"]
    left.boxplot([sides[name]["step_ms_raw"] for name in sides], showfliers=True)
    left.set_xticks(
        range(1, len(sides) + 1),
        [AGENT_SIDES.get(n, n).replace(", ", ",\n").replace(": ", ":\n") for n in sides],
    )
    # A rare slow step (a machine hiccup) would squash the boxes: cut above
    # the p99s and print each side's max instead.
    top = 1.5 * max(side["step_ms"]["p99"] for side in sides.values())
    left.set_ylim(0, top)
    for x, side in enumerate(sides.values(), start=1):
        left.text(x, top * 0.95, f"max {side['step_ms']['max']:.0f}", ha="center", fontsize=8)
    left.set_ylabel("ms per step")
    left.set_title(f"{per_step['steps']} steps, a no-op tool call each, model without delay")
    for run in runs:
        timeline = run["agent_rss_mib"]["timeline"]
        label = f"{run['processes']} x {run['threads']} threads: {run['wall_s']:.1f} s"
        right.plot(timeline["t_s"], timeline["rss_mib"], label=label)
    right.set_ylim(bottom=0)
    right.set_xlabel("s since the first message")
    right.set_ylabel("RSS of the agent worker(s), MiB")
    right.set_title(f"{runs[0]['conversations']} conversations x 3 steps")
    right.legend(fontsize=8)
    fig.suptitle(f"Agent loop{note}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_plots(result: dict[str, Any], out: Path) -> list[Path]:
    """One PNG per section present in ``result``; returns the files written."""
    plt = _pyplot()
    note = " (--quick smoke run)" if result["quick"] else ""
    written = []
    if "compare" in result:
        written += [out / "throughput.png", out / "latency.png"]
        _throughput(plt, result["compare"], written[-2], note)
        _latency(plt, result["compare"], written[-1], note)
    if "scaling" in result:
        written.append(out / "scaling.png")
        _scaling(plt, result["scaling"], result["machine"]["cores"], written[-1], note)
    if "crash_detection" in result:
        written.append(out / "crash_detection.png")
        _crash(plt, result["crash_detection"], written[-1], note)
    if "memory" in result:
        written.append(out / "api_memory.png")
        memory_plot(result["memory"], written[-1], note)
    if "agent" in result:
        written.append(out / "agent_loop.png")
        agent_plot(result["agent"], written[-1], note)
    return written
