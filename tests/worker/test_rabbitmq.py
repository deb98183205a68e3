"""The same crash promises with RabbitMQ as the broker (state stays in Redis).
Skipped when no RabbitMQ answers on 127.0.0.1:5672 (guest/guest). Each test
uses its own queue and deletes it afterwards."""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from amqp.exceptions import NotFound
from kombu import Connection, Queue

from actionq.agent.spec import AgentSpec, ScriptedCall, ScriptedTurn
from actionq.models import ConversationStatus, ErrorCause
from actionq.service import ActionQ
from actionq.settings import Settings
from tests.conftest import WorkerFactory
from tests.events import assert_log_consistent, count_lines, only_error
from tests.helpers import wait_for

AMQP_URL = "amqp://guest:guest@127.0.0.1:5672//"


def _rabbitmq_up() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 5672), timeout=1):
            return True
    except OSError:
        return False


pytestmark = pytest.mark.skipif(not _rabbitmq_up(), reason="no RabbitMQ on 127.0.0.1:5672")


@pytest.fixture
def rabbit_env(settings_env: dict[str, str]) -> Iterator[dict[str, str]]:
    queue = f"actionq-test-{uuid.uuid4().hex[:12]}"
    settings_env.update(
        {
            "ACTIONQ_BROKER_URL": AMQP_URL,
            "ACTIONQ_QUEUE": queue,
            "ACTIONQ_AGENT_QUEUE": f"{queue}.agent",
        }
    )
    yield settings_env
    with Connection(AMQP_URL) as conn:
        for name in (queue, f"{queue}.agent"):
            Queue(name, channel=conn.channel()).delete()


@pytest.fixture
def rabbit_aq(rabbit_env: dict[str, str]) -> Iterator[ActionQ]:
    fields = {k.removeprefix("ACTIONQ_").lower(): v for k, v in rabbit_env.items()}
    with ActionQ(Settings(**fields)) as client:  # type: ignore[arg-type]
        yield client


def test_killed_child_errors_once_with_rabbitmq(
    rabbit_aq: ActionQ, start_worker: WorkerFactory, workdir: Path
) -> None:
    start_worker()
    cid = rabbit_aq.create_conversation().id
    marker = workdir / "side-effect.log"
    action = rabbit_aq.submit_action(cid, "kill_own_process", {"marker_file": str(marker)})
    wait_for(lambda: rabbit_aq.get_conversation(cid).status == ConversationStatus.ERROR, 30,
             what="the crash to be recorded")  # fmt: skip
    error = only_error(rabbit_aq, cid, action.id)
    assert (error.detail.cause, error.detail.signal) == (ErrorCause.WORKER_LOST, 9)
    assert count_lines(marker) == 1
    assert_log_consistent(rabbit_aq, cid)


def test_whole_worker_killed_with_rabbitmq_runs_nothing_twice(
    rabbit_aq: ActionQ, start_worker: WorkerFactory, workdir: Path
) -> None:
    """RabbitMQ redelivers at once when the connection drops; the claim says
    the action is taken, and the lease sweep reports it."""
    first = start_worker("first")
    cid = rabbit_aq.create_conversation().id
    marker = workdir / "side-effect.log"
    action = rabbit_aq.submit_action(
        cid, "sleep_after_mark", {"marker_file": str(marker), "seconds": 60}
    )
    wait_for(lambda: count_lines(marker) == 1, 20, what="the action to start")
    first.kill_everything()
    start_worker("second")
    wait_for(lambda: rabbit_aq.get_conversation(cid).status == ConversationStatus.ERROR, 30,
             what="the lost worker to be reported")  # fmt: skip
    error = only_error(rabbit_aq, cid, action.id)
    assert error.detail.cause in (ErrorCause.LEASE_EXPIRED, ErrorCause.REDELIVERED)
    wait_for(lambda: rabbit_aq.get_action(action.id).attempt >= 2, 20, what="the redelivery")
    assert count_lines(marker) == 1
    assert_log_consistent(rabbit_aq, cid)


def test_an_agent_runs_with_rabbitmq_its_steps_sent_by_celery(
    rabbit_aq: ActionQ, start_worker: WorkerFactory, workdir: Path
) -> None:
    """Without direct enqueue every step is sent with send_task (by the API
    process, then by the tool worker when the call ends): the loop goes on."""
    marker = workdir / "agent.log"
    turns = [
        ScriptedTurn(
            tool_calls=[
                ScriptedCall(
                    tool="sleep_after_mark",
                    arguments={"marker_file": str(marker), "line": "one", "seconds": 0},
                )
            ]
        ),
        ScriptedTurn(text="done"),
    ]
    start_worker("tools")
    start_worker("agent", agent=True)
    cid = rabbit_aq.create_conversation(agent=AgentSpec(kind="scripted", turns=turns)).id
    rabbit_aq.send_message(cid, "go", run=True)
    wait_for(
        lambda: rabbit_aq.get_conversation(cid).status == ConversationStatus.FINISHED,
        30,
        what="the agent to finish",
    )
    assert count_lines(marker) == 1
    assert_log_consistent(rabbit_aq, cid)


# What a Celery worker declares, vhost-wide, once it sees quorum queues
# (kombu's native delayed delivery): 28 levels of queues and exchanges.
_DELAYED = [f"celery_delayed_{level}" for level in range(28)]


def _declared(kind: str, name: str) -> bool:
    with Connection(AMQP_URL) as conn:
        channel = conn.channel()
        try:
            if kind == "queue":
                channel.queue_declare(name, passive=True)
            else:
                channel.exchange_declare(name, "topic", passive=True)
            return True
        except NotFound:
            return False


@pytest.fixture
def delayed_delivery_cleanup() -> Iterator[None]:
    """Delete the delayed-delivery queues and exchanges the test's worker
    made on the shared RabbitMQ (only those that were not there before)."""
    queues = [name for name in _DELAYED if not _declared("queue", name)]
    exchanges = [n for n in [*_DELAYED, "celery_delayed_delivery"] if not _declared("exchange", n)]
    yield
    with Connection(AMQP_URL) as conn:
        channel = conn.channel()
        for name in queues:
            channel.queue_delete(name)
        for name in exchanges:
            channel.exchange_delete(name)


@pytest.mark.usefixtures("delayed_delivery_cleanup")
def test_with_quorum_queues_a_killed_child_errors_once(
    rabbit_env: dict[str, str], start_worker: WorkerFactory, workdir: Path
) -> None:
    """ACTIONQ_BROKER_QUEUE_TYPE=quorum: Celery declares replicated queues
    (as the Cluster layout asks for), and the crash promise holds on them."""
    from amqp.exceptions import PreconditionFailed

    rabbit_env["ACTIONQ_BROKER_QUEUE_TYPE"] = "quorum"
    fields = {k.removeprefix("ACTIONQ_").lower(): v for k, v in rabbit_env.items()}
    with ActionQ(Settings(**fields)) as aq:  # type: ignore[arg-type]
        start_worker()
        cid = aq.create_conversation().id
        marker = workdir / "side-effect.log"
        action = aq.submit_action(cid, "kill_own_process", {"marker_file": str(marker)})
        wait_for(lambda: aq.get_conversation(cid).status == ConversationStatus.ERROR, 30,
                 what="the crash to be recorded")  # fmt: skip
        error = only_error(aq, cid, action.id)
        assert (error.detail.cause, error.detail.signal) == (ErrorCause.WORKER_LOST, 9)
        assert count_lines(marker) == 1
    # The queue is a quorum queue: declaring it as a classic one is refused.
    with Connection(AMQP_URL) as conn, pytest.raises(PreconditionFailed, match="x-queue-type"):
        queue = Queue(rabbit_env["ACTIONQ_QUEUE"], queue_arguments={"x-queue-type": "classic"})
        queue(conn.channel()).declare()
