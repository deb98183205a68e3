"""The per-command memory cap and the memory facts of crash events, with real
prefork workers: a command over its cap dies alone (a ``memory_limit``
crash recorded by the pool child, which lives on, while another
conversation's action on the same worker keeps running); a crash of a
terminal action reports its command's peak; a pool child ended by the
kernel's OOM killer says so."""

from __future__ import annotations

import contextlib
import os
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from actionq.models import ActionState, ConversationStatus, ErrorCause, ObservationEvent
from actionq.service import ActionQ
from actionq.tasks.oom_watch import KernelLog
from actionq.tools.sandbox import CommandCgroup, MemoryCgroup
from tests.conftest import WorkerFactory
from tests.events import assert_log_consistent, only_error, terminal_events
from tests.helpers import wait_for

MiB = 1024 * 1024


@contextlib.contextmanager
def memory_cgroup(limit_bytes: int) -> Iterator[MemoryCgroup | None]:
    """A memory cgroup of this test process's own, capped at ``limit_bytes``
    (cgroup v2 with the memory controller, or the v1 memory hierarchy);
    None where the machine gives none."""
    name = f"actionq-test-{uuid.uuid4().hex[:8]}"
    command_cgroup = CommandCgroup.create(name)
    memory = MemoryCgroup.create(name, command_cgroup, limit_bytes)
    if memory is not None and memory.v1 and command_cgroup is not None:
        command_cgroup.remove()  # only the v1 directory is used
        command_cgroup = None
    try:
        yield memory
    finally:
        for group in (memory, command_cgroup):
            if group is not None:
                group.kill()
        if command_cgroup is not None:
            command_cgroup.kill()
        if memory is not None:
            memory.remove()
        if command_cgroup is not None:
            command_cgroup.remove()


def memory_cgroups_available() -> bool:
    with memory_cgroup(64 * MiB) as group:
        return group is not None


NO_MEMORY_CGROUP = "needs a writable memory cgroup (cgroup v2 memory controller, or v1 memory)"


def observation(aq: ActionQ, cid: str, action_id: str) -> dict[str, object]:
    [event] = terminal_events(aq, cid, action_id)
    assert isinstance(event, ObservationEvent), event
    return event.observation


def leftover_cgroups(action_id: str) -> list[str]:
    """cgroup directories still named after the action, anywhere on this host."""
    found = []
    for root, dirs, _ in os.walk("/sys/fs/cgroup"):
        found += [os.path.join(root, d) for d in dirs if d == f"actionq-{action_id}"]
        dirs[:] = [d for d in dirs if not d.startswith("actionq-")]
    return found


# Allocates 300 MiB in 10 MiB steps (zeroed, so really resident).
LEAK = (
    "python3 -c 'import time\n"
    "held = []\n"
    "for i in range(30):\n"
    "    held.append(bytearray(10 * 2**20)); time.sleep(0.01)'"
)


@pytest.mark.skipif(not memory_cgroups_available(), reason=NO_MEMORY_CGROUP)
def test_a_command_over_its_cap_dies_alone_as_a_memory_limit_crash(
    aq: ActionQ, start_worker: WorkerFactory, workdir: Path
) -> None:
    worker = start_worker(concurrency=2, ACTIONQ_ACTION_MEMORY_LIMIT_MB="64")
    # Another conversation's longer action, on the other pool child.
    other = aq.create_conversation().id
    long = aq.submit_action(
        other, "terminal", {"command": f"echo $PPID > {workdir}/pid-long; sleep 8; echo long-done"}
    )
    wait_for(lambda: (workdir / "pid-long").exists(), 20, what="the long action to start")

    cid = aq.create_conversation().id
    leak = aq.submit_action(
        cid, "terminal", {"command": f"echo $PPID > {workdir}/pid-leak; echo leaking; {LEAK}"}
    )
    queued = aq.submit_action(cid, "terminal", {"command": "echo never"})
    wait_for(
        lambda: aq.get_conversation(cid).status == ConversationStatus.ERROR,
        30,
        what="the leaking conversation to go to error",
    )

    error = only_error(aq, cid, leak.id)
    detail = error.detail
    assert detail.cause == ErrorCause.MEMORY_LIMIT
    assert error.classification.kind == "crash" and not error.classification.retryable
    assert detail.killed_by == "memory_limit"
    assert detail.memory_limit_bytes == 64 * MiB
    assert detail.max_rss_bytes is not None and detail.max_rss_bytes >= 60 * MiB
    # The shell was killed with it (cgroup v2's memory.oom.group), or went on
    # after its python3 was (v1): either way the one outcome is recorded.
    assert detail.signal == signal.SIGKILL or detail.exitcode is not None
    assert detail.host and detail.pid == worker.pid and detail.runtime_s is not None
    assert "memory cap of 64 MiB" in error.error and "python3 -c" in error.error
    assert "not re-run" in error.error
    # What it printed before it was killed (the follower's copy: this pool child
    # records the crash itself).
    assert detail.output_tail is not None and detail.output_tail.startswith("leaking\n")
    assert aq.get_action(leak.id).state == ActionState.ERRORED
    assert only_error(aq, cid, queued.id).detail.cause == ErrorCause.NOT_RUN
    assert_log_consistent(aq, cid)
    assert leftover_cgroups(leak.id) == []

    # The long action still runs, so the next action goes to the pool child
    # that ran the leak: it is alive and serves it.
    assert aq.get_action(long.id).state == ActionState.CLAIMED
    third = aq.create_conversation().id
    after = aq.submit_action(third, "terminal", {"command": "echo $PPID"})
    aq.wait_for_action(after.id, 20)
    leak_child = (workdir / "pid-leak").read_text().strip()
    assert str(observation(aq, third, after.id)["output"]).strip() == leak_child
    assert leak_child != (workdir / "pid-long").read_text().strip()

    aq.wait_for_action(long.id, 30)
    assert observation(aq, other, long.id)["output"] == "long-done\n"
    assert aq.get_conversation(other).status == ConversationStatus.IDLE
    assert worker.is_alive()


@pytest.mark.skipif(not memory_cgroups_available(), reason=NO_MEMORY_CGROUP)
def test_a_crash_of_a_terminal_action_reports_its_commands_peak(
    aq: ActionQ, start_worker: WorkerFactory
) -> None:
    """The pool child dies while its command holds 80 MiB: the main process
    reads the command's cgroup (still there) before it kills what is left."""
    start_worker()
    cid = aq.create_conversation().id
    command = (
        "PP=$PPID python3 -c 'import os, time\n"
        "held = bytearray(80 * 2**20)\n"
        'os.kill(int(os.environ["PP"]), 9); time.sleep(30)\''
    )
    action = aq.submit_action(cid, "terminal", {"command": command})
    aq.wait_for_action(action.id, 30)

    detail = only_error(aq, cid, action.id).detail
    assert detail.cause == ErrorCause.WORKER_LOST and detail.signal == signal.SIGKILL
    assert detail.max_rss_bytes is not None and detail.max_rss_bytes >= 80 * MiB
    assert detail.memory_limit_bytes == 2048 * MiB  # the default cap, read from the cgroup
    assert detail.killed_by is None  # a kill -9, not the kernel: nothing is claimed
    wait_for(lambda: leftover_cgroups(action.id) == [], 10, what="the cgroups to be removed")


def kernel_log_readable() -> bool:
    log = KernelLog.open()
    if log is None:
        return False
    log.close()
    return True


@pytest.mark.skipif(not memory_cgroups_available(), reason=NO_MEMORY_CGROUP)
@pytest.mark.skipif(not kernel_log_readable(), reason="needs a readable /dev/kmsg (root)")
def test_a_pool_child_ended_by_the_oom_killer_says_so(
    aq: ActionQ, start_worker: WorkerFactory
) -> None:
    """The worker runs in a cgroup capped at 400 MiB; a Python tool grows its
    pool child past that, and the kernel's OOM killer ends the child."""
    with memory_cgroup(400 * MiB) as group:
        assert group is not None
        worker = start_worker()
        for process in [psutil.Process(worker.pid), *worker.children()]:
            (group.path / "cgroup.procs").write_text(str(process.pid))
        cid = aq.create_conversation().id
        action = aq.submit_action(cid, "allocate_in_process", {"mib": 1500})
        aq.wait_for_action(action.id, 60)

        error = only_error(aq, cid, action.id)
        assert error.detail.cause == ErrorCause.WORKER_LOST
        assert error.detail.signal == signal.SIGKILL
        assert error.detail.killed_by == "oom_killer"
        assert "OOM killer" in error.error
        assert error.detail.max_rss_bytes is None  # a Python tool: no command cgroup counted it
        assert worker.is_alive()
        worker.stop(timeout=10)
