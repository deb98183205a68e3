"""One chaos run: start the stack, drive conversations while injecting
faults, let it settle, check the invariants, print a summary."""

from __future__ import annotations

import random
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

from tests.chaos.driver import Driver
from tests.chaos.faults import FaultInjector
from tests.chaos.invariants import Report, check
from tests.chaos.stack import ChaosStack, StoreKind


@dataclass
class ChaosResult:
    seed: int
    store: StoreKind
    report: Report
    faults: dict[str, int]
    fault_errors: list[str]
    settled: bool
    seconds: float
    api_errors: int
    resumes: int
    base: Path

    @property
    def ok(self) -> bool:
        return self.settled and not self.report.violations and not self.fault_errors


def run_chaos(
    seed: int,
    faults: int = 50,
    mean_interval: float = 1.0,
    concurrent: int = 12,
    steps: int = 8,
    base: Path | None = None,
    settle_timeout: float = 180.0,
    store: StoreKind = "embedded",
    min_actions: int = 0,
) -> ChaosResult:
    """Inject ``faults`` while driving conversations, and keep opening new
    ones until at least ``min_actions`` actions are planned too: a slow
    machine runs longer instead of checking less."""
    rng = random.Random(seed)
    base = base or Path(tempfile.mkdtemp(prefix=f"actionq-chaos-{seed}-"))
    started = time.monotonic()
    stack = ChaosStack(base, store=store)
    driver = Driver(stack, rng, concurrent, steps)
    injector = FaultInjector(stack, random.Random(rng.random()), faults, mean_interval)
    try:
        stack.start()  # in the try: a stack that fails to start is stopped too
        injector.start()
        # Keep conversations coming while faults are injected, then let every
        # script finish on a stack that is whole again.
        deadline = time.monotonic() + faults * mean_interval * 4 + settle_timeout
        driver.run_until(
            lambda: not injector.finished.is_set() or driver.planned_actions < min_actions,
            deadline,
        )
        injector.stopping.set()
        injector.join(30)
        _make_whole(stack)
        settled = driver.run_until(lambda: False, time.monotonic() + settle_timeout)
        # The stack's own key prefix: on a cluster it is not the default.
        state = stack.open_store()
        checked = [s.conversation_id for s in driver.scripts] + injector.extra_conversations
        report = check(state, checked, stack.side_effects, driver.acknowledged)
        state.redis.close()
    finally:
        driver.close()
        stack.stop()
    return ChaosResult(
        seed=seed,
        store=store,
        report=report,
        faults=dict(injector.done),
        fault_errors=injector.errors,
        settled=settled,
        seconds=time.monotonic() - started,
        api_errors=driver.api_errors,
        resumes=sum(s.resumes for s in driver.scripts),
        base=base,
    )


def _make_whole(stack: ChaosStack) -> None:
    """After the fault phase: the store, API and enough workers up again."""
    stack.redis.ensure_up()
    if stack.api is None or stack.api.poll() is not None:
        stack.start_api()
    stack.wait_api()
    while len(stack.live_workers()) < 2:
        stack.add_worker(wait=True)


def print_summary(result: ChaosResult, console: Console | None = None) -> None:
    console = console or Console()
    r = result.report
    table = Table(title=f"chaos run on {result.store}, seed {result.seed} ({result.seconds:.0f}s)")
    table.add_column("")
    table.add_column("", justify="right")
    for kind, count in sorted(result.faults.items()):
        table.add_row(f"fault: {kind}", str(count))
    table.add_row("faults, total", str(sum(result.faults.values())))
    table.add_row("conversations", str(r.conversations))
    table.add_row("actions", str(r.actions))
    for outcome, count in sorted(r.outcomes.items()):
        table.add_row(f"outcome: {outcome}", str(count))
    for status, count in sorted(r.statuses.items()):
        table.add_row(f"final status: {status}", str(count))
    table.add_row("resumes after error", str(result.resumes))
    table.add_row("API calls that failed and were retried", str(result.api_errors))
    table.add_row("settled in time", "yes" if result.settled else "NO")
    table.add_row("violations", str(len(r.violations)))
    console.print(table)
    for error in result.fault_errors:
        console.print(f"[red]fault could not be injected:[/] {error}")
    for cid, what in r.violations[:20]:
        console.print(f"[red]violation[/] conversation {cid}: {what}")
    if not result.ok:
        console.print(
            f"[red]FAILED[/] - reproduce with --seed {result.seed}; data in {result.base}"
        )
