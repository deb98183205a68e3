"""What the memory cap reads: cgroup files (memory.events, memory.oom_control,
memory.max, memory.peak, v1's counters), where this process's cgroups are
mounted, the kernel log's OOM kill records, and how a dead pool child is
matched to one. Files are laid out in a temporary folder the way cgroupfs
has them; nothing runs."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pytest

from actionq.errors import CommandOutOfMemory
from actionq.models import ErrorCause, ErrorDetail
from actionq.tasks.oom_watch import KernelLog, OomWatch, parse_oom_kill, parse_record
from actionq.tools.sandbox import (
    CommandCgroup,
    MemoryCgroup,
    MemoryUsage,
    cgroup_directories,
    parse_flat_keyed,
    parse_memory_value,
)

MiB = 1024 * 1024

V2_EVENTS = "low 0\nhigh 0\nmax 412\noom 3\noom_kill 2\noom_group_kill 1\n"
V1_OOM_CONTROL = "oom_kill_disable 0\nunder_oom 0\noom_kill 1\n"


def test_flat_keyed_files() -> None:
    assert parse_flat_keyed(V2_EVENTS) == {
        "low": 0, "high": 0, "max": 412, "oom": 3, "oom_kill": 2, "oom_group_kill": 1,
    }  # fmt: skip
    assert parse_flat_keyed(V1_OOM_CONTROL)["oom_kill"] == 1
    assert parse_flat_keyed("garbage\nname 1 2\n\nok 5\n") == {"ok": 5}


@pytest.mark.parametrize(
    ("text", "value"),
    [("max\n", None), ("67108864\n", 64 * MiB), ("9223372036854771712\n", None), ("0", 0)],
)
def test_memory_values(text: str, value: int | None) -> None:
    assert parse_memory_value(text) == value


def test_a_memory_value_that_is_not_one() -> None:
    with pytest.raises(ValueError):
        parse_memory_value("lots")


HYBRID_CGROUP = """9:name=systemd:/
4:memory:/process_api/ae1e
2:cpu,cpuacct:/svc
0::/
"""
HYBRID_MOUNTS = """31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""


def test_cgroup_directories_on_a_hybrid_host() -> None:
    assert cgroup_directories(HYBRID_CGROUP, HYBRID_MOUNTS) == [Path("/sys/fs/cgroup/unified")]
    assert cgroup_directories(HYBRID_CGROUP, HYBRID_MOUNTS, "memory") == [
        Path("/sys/fs/cgroup/memory/process_api/ae1e")
    ]
    assert cgroup_directories(HYBRID_CGROUP, HYBRID_MOUNTS, "cpuacct") == [
        Path("/sys/fs/cgroup/cpu,cpuacct/svc")
    ]
    assert cgroup_directories(HYBRID_CGROUP, HYBRID_MOUNTS, "pids") == []


def test_cgroup_directories_in_a_cgroup_namespace() -> None:
    """A container: the mount's root is the namespace's own cgroup."""
    own = "0::/system.slice/docker-1.scope/app\n"
    mounts = "50 40 0:30 /system.slice/docker-1.scope /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n"
    assert cgroup_directories(own, mounts) == [Path("/sys/fs/cgroup/app")]
    assert cgroup_directories(own, mounts, "memory") == []  # no v1 memory hierarchy


def test_cgroup_directories_without_cgroup_v2() -> None:
    only_v1 = "4:memory:/user.slice\n1:name=systemd:/user.slice\n"
    mounts = "35 31 0:32 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n"
    assert cgroup_directories(only_v1, mounts) == []
    assert cgroup_directories(only_v1, mounts, "memory") == [
        Path("/sys/fs/cgroup/memory/user.slice")
    ]


def _cgroupfs(path: Path, files: dict[str, str]) -> Path:
    path.mkdir()
    for name, text in files.items():
        (path / name).write_text(text)
    return path


def test_v2_usage_of_a_command_killed_by_its_cap(tmp_path: Path) -> None:
    group = _cgroupfs(
        tmp_path / "actionq-a1",
        {"memory.events": V2_EVENTS, "memory.peak": "67104768\n", "memory.max": "67108864\n"},
    )
    usage = MemoryCgroup(group, v1=False).usage()
    assert usage == MemoryUsage(64 * MiB, 67104768, oom_kills=2, limit_reached=True)
    assert usage.killed_by == "memory_limit"


def test_v2_usage_before_linux_5_19_and_a_machine_wide_oom(tmp_path: Path) -> None:
    """No memory.peak: the peak is unknown. oom_kill without "oom": the cap was
    never reached, the machine ran out."""
    group = _cgroupfs(
        tmp_path / "actionq-a2",
        {"memory.events": "max 0\noom 0\noom_kill 1\n", "memory.max": "max\n"},
    )
    usage = MemoryCgroup(group, v1=False).usage()
    assert usage == MemoryUsage(None, None, oom_kills=1, limit_reached=False)
    assert usage.killed_by == "oom_killer"


def test_v2_without_the_memory_controller_counts_nothing(tmp_path: Path) -> None:
    group = _cgroupfs(tmp_path / "actionq-a3", {"cgroup.procs": ""})
    assert MemoryCgroup(group, v1=False).usage() is None


def _v1_files(failcnt: int, peak: int, oom_kill: int) -> dict[str, str]:
    return {
        "memory.oom_control": f"oom_kill_disable 0\nunder_oom 0\noom_kill {oom_kill}\n",
        "memory.limit_in_bytes": f"{64 * MiB}\n",
        "memory.max_usage_in_bytes": f"{peak}\n",
        "memory.failcnt": f"{failcnt}\n",
        "memory.memsw.failcnt": "0\n",
    }


@pytest.mark.parametrize(
    ("failcnt", "peak", "oom_kill", "killed_by"),
    [
        (0, 64 * MiB, 1, "memory_limit"),  # recent kernels do not count failcnt on v1
        (7, 40 * MiB, 1, "memory_limit"),
        (0, 40 * MiB, 1, "oom_killer"),  # far below its cap: the machine ran out
        (0, 64 * MiB, 0, None),  # at the cap (page cache), nothing killed
    ],
)
def test_v1_usage(
    tmp_path: Path, failcnt: int, peak: int, oom_kill: int, killed_by: str | None
) -> None:
    group = _cgroupfs(tmp_path / "actionq-a4", _v1_files(failcnt, peak, oom_kill))
    usage = MemoryCgroup(group, v1=True).usage()
    assert usage is not None
    assert (usage.limit_bytes, usage.peak_bytes, usage.oom_kills) == (64 * MiB, peak, oom_kill)
    assert usage.killed_by == killed_by


def test_a_gone_cgroup_counts_nothing(tmp_path: Path) -> None:
    assert MemoryCgroup(tmp_path / "gone", v1=True).usage() is None


# -- the kernel log ----------------------------------------------------------

KILLED_MEMCG = (
    "3,425,697650410,-;Memory cgroup out of memory: Killed process 8526 (python3) "
    "total-vm:78044kB, anon-rss:65280kB, file-rss:6628kB, shmem-rss:0kB, UID:0 "
    "pgtables:180kB oom_score_adj:0\n"
)
KILLED_GLOBAL = (
    "3,9001,5,-;Out of memory: Killed process 41277 (celery: (worker)) total-vm:2480000kB, "
    "anon-rss:2000000kB, file-rss:1000kB, shmem-rss:24kB, UID:1000 pgtables:4000kB "
    "oom_score_adj:0\n SUBSYSTEM=memory\n"
)
KILLED_OLD = "3,77,1,-;Killed process 1234 (java) total-vm:100kB, anon-rss:10kB, file-rss:2kB\n"


def test_oom_kill_records() -> None:
    kill = parse_oom_kill(KILLED_MEMCG)
    assert kill is not None
    assert (kill.seq, kill.pid, kill.name) == (425, 8526, "python3")
    assert kill.rss_bytes == (65280 + 6628) * 1024
    glob = parse_oom_kill(KILLED_GLOBAL)
    assert glob is not None and (glob.pid, glob.name) == (41277, "celery: (worker)")
    assert glob.rss_bytes == (2000000 + 1000 + 24) * 1024
    old = parse_oom_kill(KILLED_OLD)
    assert old is not None and (old.pid, old.rss_bytes) == (1234, 12 * 1024)


@pytest.mark.parametrize(
    "record",
    [
        "4,348,697641558,-;python3 invoked oom-killer: gfp_mask=0xcc0(GFP_KERNEL)\n",
        "6,430,697660000,-;oom_reaper: reaped process 8526 (python3), now anon-rss:0kB\n",
        "6,431,1,-;a user wrote: Killed process 1 (init) in a log line\n",
        "not a record at all",
    ],
)
def test_records_that_report_no_kill(record: str) -> None:
    assert parse_oom_kill(record) is None


def test_record_header() -> None:
    assert parse_record("6,12,345,-,caller=T1;hello\n KEY=v\n") == (12, "hello")
    assert parse_record("hello") is None


class FeedLog(KernelLog):
    """A kernel log fed by the test (the watch's only input)."""

    def __init__(self) -> None:
        super().__init__(-1)
        self.pending: list[str] = []

    def new_records(self, at_most: int = 10_000) -> Iterable[str]:
        records, self.pending = self.pending, []
        return records

    def log(self, seq: int, pid: int | None = None) -> None:
        if pid is None:
            self.pending.append(f"6,{seq},1,-;something else\n")
        else:
            self.pending.append(
                f"3,{seq},1,-;Out of memory: Killed process {pid} (celery) total-vm:9kB, "
                "anon-rss:2048kB, file-rss:0kB, shmem-rss:0kB\n"
            )


def test_a_kill_of_the_child_running_the_action_is_found() -> None:
    feed = FeedLog()
    watch = OomWatch(feed)
    feed.log(1)
    watch.observe([("a1", 100), ("a2", 200), ("a3", None)])
    feed.log(2, pid=100)
    kill = watch.oom_kill_of("a1")
    assert kill is not None and kill.pid == 100 and kill.rss_bytes == 2 * MiB
    assert watch.oom_kill_of("a2") is None  # its child was not the one killed
    assert watch.oom_kill_of("a3") is None  # not started: no child known
    assert watch.oom_kill_of("never-seen") is None


def test_a_kill_logged_in_the_tick_the_action_was_first_seen_counts() -> None:
    """An action that dies fast: the kill is read by the observation that
    first sees the action (its child was ours since before that read)."""
    feed = FeedLog()
    watch = OomWatch(feed)
    watch.observe([])
    feed.log(5, pid=300)
    watch.observe([("fast", 300)])
    assert watch.oom_kill_of("fast") is not None


def test_an_earlier_kill_of_the_same_pid_is_someone_elses() -> None:
    """A kill read before the action was seen on that pid (the pid was another
    process's then) is not this action's."""
    feed = FeedLog()
    watch = OomWatch(feed)
    feed.log(1, pid=400)
    watch.observe([])
    watch.observe([("later", 400)])
    assert watch.oom_kill_of("later") is None


def test_an_action_that_moved_on_is_forgotten() -> None:
    feed = FeedLog()
    watch = OomWatch(feed)
    watch.observe([("a1", 100)])
    watch.observe([("a2", 100)])
    feed.log(9, pid=100)
    assert watch.oom_kill_of("a1") is None
    assert watch.oom_kill_of("a2") is not None


def test_without_a_kernel_log_nothing_is_claimed() -> None:
    watch = OomWatch(None)
    watch.observe([("a1", 100)])
    assert not watch.enabled and watch.oom_kill_of("a1") is None


# -- what the event says -------------------------------------------------------


def test_what_the_agent_reads_of_a_command_killed_for_memory() -> None:
    cap = CommandOutOfMemory(
        "python3 leak.py", killed_by="memory_limit", limit_bytes=64 * MiB, peak_bytes=64 * MiB
    )
    assert str(cap) == "it reached its memory cap of 64 MiB, peak 64 MiB; command: python3 leak.py"
    machine = CommandOutOfMemory(
        "x" * 300, killed_by="oom_killer", limit_bytes=2048 * MiB, peak_bytes=int(1.5 * 1024 * MiB)
    )
    text = machine.describe()
    assert text.startswith("the machine ran out of memory and the kernel's OOM killer ended it")
    assert "2048 MiB cap" in text and "peak 1536 MiB" in text
    assert text.endswith("x" * 199 + "…")
    unknown = CommandOutOfMemory(
        "y", killed_by="memory_limit", limit_bytes=10 * MiB, peak_bytes=None
    )
    assert "peak" not in str(unknown)


def test_error_detail_takes_the_memory_fields() -> None:
    detail = ErrorDetail(
        cause=ErrorCause.MEMORY_LIMIT,
        max_rss_bytes=1,
        memory_limit_bytes=2,
        killed_by="memory_limit",
    )
    assert detail.model_dump()["killed_by"] == "memory_limit"
    with pytest.raises(ValueError):
        ErrorDetail(cause=ErrorCause.WORKER_LOST, killed_by="the user")  # type: ignore[arg-type]


def test_the_cap_in_a_cgroup_v2(tmp_path: Path) -> None:
    """A command cgroup whose parent gives it the memory controller: the cap,
    no swap, and the whole command killed together."""
    path = _cgroupfs(
        tmp_path / "actionq-a5",
        {"memory.max": "max\n", "memory.swap.max": "max\n", "memory.oom.group": "0\n"},
    )
    memory = MemoryCgroup.create("actionq-a5", CommandCgroup(path), 64 * MiB)
    assert memory is not None and memory.path == path and not memory.v1
    assert (path / "memory.max").read_text() == str(64 * MiB)
    assert (path / "memory.swap.max").read_text() == "0"
    assert (path / "memory.oom.group").read_text() == "1"
    memory.remove()  # the command's own cgroup: removed with it, not here
    assert path.is_dir()


def test_the_cap_in_a_cgroup_v2_without_swap_accounting(tmp_path: Path) -> None:
    path = _cgroupfs(tmp_path / "actionq-a6", {"memory.max": "max\n"})
    memory = MemoryCgroup.create("actionq-a6", CommandCgroup(path), 64 * MiB)
    assert memory is not None and (path / "memory.max").read_text() == str(64 * MiB)
    assert not (path / "memory.swap.max").exists()
