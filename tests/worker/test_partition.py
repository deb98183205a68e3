"""A worker cut off from Redis by the network while its command runs: the
worker lives on in a network namespace of its own (``ip netns``), joined
to the host by a veth pair, and the test takes that link down.

It is the split brain a restart-time check cannot see: the partitioned
worker is alive, while the rest of the cluster sees its lease lapse. A
worker on the host sweeps the claim (``lease_expired``, the conversation in
``error``) and, being on the same machine, stops the command's process
group as it does for any dead worker here (on another machine it could
not: the command would end by itself). When the link comes back, the
partitioned worker's late result is fenced out and dropped, the command is
not run again by anyone, and the same worker process goes on working.
Needs root and iproute2 (skipped without, failed in CI).
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from actionq.models import ActionState, AgentErrorEvent, ConversationStatus, ErrorCause
from actionq.service import ActionQ
from actionq.settings import Settings
from tests.events import assert_log_consistent, only_error, terminal_events
from tests.helpers import ROOT, ValkeyServer, WorkerProcess, wait_for
from tests.openhands.harness import in_ci


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


@dataclass
class Link:
    """A network namespace and the veth pair to it: the host's end has
    ``host_ip``; ``cut``/``heal`` take the host's end down and up (packets
    are dropped, not refused: the far side sees silence, as in a partition)."""

    namespace: str
    host_end: str
    host_ip: str

    def cut(self) -> None:
        _ip("link", "set", self.host_end, "down")

    def heal(self) -> None:
        _ip("link", "set", self.host_end, "up")

    def run_in(self) -> tuple[str, ...]:
        return ("ip", "netns", "exec", self.namespace)


@pytest.fixture
def link() -> Iterator[Link]:
    why = None
    if os.geteuid() != 0:
        why = "network namespaces need root"
    elif shutil.which("ip") is None:
        why = "no `ip` command (iproute2)"
    if why is not None:
        if in_ci():
            pytest.fail(f"{why}; CI must run the partition test")
        pytest.skip(why)
    tag = secrets.token_hex(3)
    # A /30 of its own, so that two runs on one machine never share one.
    a, b = secrets.randbelow(250) + 1, secrets.randbelow(60) * 4
    host_ip, far_ip = f"10.231.{a}.{b + 1}", f"10.231.{a}.{b + 2}"
    found = Link(namespace=f"aq-part-{tag}", host_end=f"vaq{tag}h", host_ip=host_ip)
    far_end = f"vaq{tag}n"
    _ip("netns", "add", found.namespace)
    try:
        _ip("link", "add", found.host_end, "type", "veth", "peer", "name", far_end)
        _ip("link", "set", far_end, "netns", found.namespace)
        _ip("addr", "add", f"{host_ip}/30", "dev", found.host_end)
        _ip("link", "set", found.host_end, "up")
        inside = ("-n", found.namespace)
        _ip(*inside, "addr", "add", f"{far_ip}/30", "dev", far_end)
        _ip(*inside, "link", "set", far_end, "up")
        _ip(*inside, "link", "set", "lo", "up")
        yield found
    finally:
        # Deleting one end deletes its peer.
        subprocess.run(["ip", "link", "del", found.host_end], capture_output=True, timeout=10)
        subprocess.run(["ip", "netns", "del", found.namespace], capture_output=True, timeout=10)


def worker_env(url: str, tmp_path: Path) -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("ACTIONQ_")} | {
        "PYTHONPATH": str(ROOT),
        "ACTIONQ_REDIS_URL": url,
        "ACTIONQ_TOOL_MODULES": "tests.tools_for_tests",
        "ACTIONQ_WORKDIR": str(tmp_path),
    }


@pytest.mark.timeout(240)
def test_a_partitioned_worker_is_swept_its_late_result_dropped_and_it_works_again(
    link: Link, tmp_path: Path
) -> None:
    server = ValkeyServer(tmp_path / "valkey", also_bind=(link.host_ip,))
    server.start()
    far_url = f"redis://{link.host_ip}:{server.port}/0"
    near_url = server.url(0)
    far = WorkerProcess(
        "far", worker_env(far_url, tmp_path), tmp_path, prefix=link.run_in()
    ).start()
    near: WorkerProcess | None = None
    aq = ActionQ(Settings(redis_url=near_url, tool_modules=["tests.tools_for_tests"]))
    try:
        far.wait_ready(60)
        cid = aq.create_conversation().id
        marker = tmp_path / "ran.txt"
        command = f"echo start >> {marker}; sleep 20; echo end >> {marker}"
        action = aq.submit_action(cid, "terminal", {"command": command})
        wait_for(lambda: marker.exists(), 30, 0.1, "the far worker to start the command")
        assert aq.get_action(action.id).owner.startswith("far@")  # type: ignore[union-attr]

        link.cut()
        # A worker on the host's side: it sees the far worker's lease lapse.
        near = WorkerProcess("near", worker_env(near_url, tmp_path), tmp_path).start()
        near.wait_ready(60)
        swept = wait_for(
            lambda: (a := aq.get_action(action.id)).state == ActionState.ERRORED and a,
            30, 0.1, "the near worker to sweep the far worker's claim",
        )  # fmt: skip
        assert swept.state == ActionState.ERRORED
        error = only_error(aq, cid, action.id)
        assert isinstance(error, AgentErrorEvent)
        assert error.detail.cause == ErrorCause.LEASE_EXPIRED
        assert aq.get_conversation(cid).status == ConversationStatus.ERROR

        # The far worker's tool saw its command stopped; its result waits for Redis.
        link.heal()
        wait_for(
            lambda: "dropped: late result" in far.log(), 60, 0.2, "the far worker's late result"
        )
        # One outcome, the sweep's; the command ran once (stopped, so its
        # tool returned before the 20 s were up) and never again.
        assert [e.kind for e in terminal_events(aq, cid, action.id)] == ["AgentErrorEvent"]
        assert marker.read_text().split() == ["start"]
        assert aq.get_conversation(cid).status == ConversationStatus.ERROR
        assert_log_consistent(aq, cid)

        # The same far worker process works again once the near one is gone.
        near.stop()
        pid = far.pid
        assert far.is_alive()
        aq.resume(cid)
        pid_file = tmp_path / "worker-pid.txt"
        after = aq.submit_action(cid, "mark_worker_pid", {"marker_file": str(pid_file)})
        assert aq.wait_for_action(after.id, 60).state == ActionState.DONE
        assert pid_file.read_text().split() == [str(pid)]
        assert far.is_alive() and far.pid == pid
        assert marker.read_text().split() == ["start"]
        log = far.log()
        assert "CRITICAL" not in log and "Unrecoverable error" not in log, log[-3000:]
    finally:
        aq.close()
        if near is not None:
            near.stop(timeout=10)
        far.stop(timeout=10)
        server.stop()
