"""Sending an action's Celery message in the same Lua call that stores it.

When the broker is the state store's own Redis (the default), the message
that runs an action is pushed onto the Celery queue by the store transition
that makes the action runnable: ``submit_action`` for an action that may run
at once, ``finish_action`` for the next queued one. The store and the queue
then change together or not at all, so there is no moment where an action is
runnable but its message is not sent (the process died between the two, or
the broker refused the send), and one round trip does both.

The message is Celery's own: headers, properties and body come from
``app.amqp.as_task_v2``, as ``send_task`` makes them, wrapped in the envelope
kombu's Redis transport stores (``Channel._put``); the ``task-sent`` event is
the one ``send_task`` publishes. ``tests/store/test_direct_enqueue.py`` checks both
against what kombu itself writes. Any other broker (RabbitMQ, another Redis,
a key prefix) uses ``send_task`` as before.
"""

from __future__ import annotations

import base64
import os
import uuid
from urllib.parse import urlparse

from celery import Celery
from celery.events import Event
from celery.utils.nodenames import anon_nodename
from celery.utils.time import utcoffset
from kombu.utils.json import dumps as kombu_json

from actionq.settings import OUR_TRANSPORT, Settings
from actionq.store.records import BrokerList, QueuedMessage

__all__ = ["STEP_TASK_PLACEHOLDER", "TaskMessages", "broker_list_for", "step_message_template"]

EVENT_EXCHANGE = "celeryev"


def broker_list_for(settings: Settings) -> BrokerList | None:
    """The list to push to, when the broker is the state store's own Redis
    database with kombu's default key layout; else None (``send_task``)."""
    if not settings.direct_enqueue:
        return None
    url = settings.effective_broker_url
    if url != settings.redis_url or not url.startswith("redis://"):
        return None
    if settings.effective_broker_transport not in (OUR_TRANSPORT, "redis"):
        return None
    path = urlparse(url).path.strip("/")
    db = int(path) if path.isdigit() else 0
    # kombu's fanout key prefix is "/{db}." and events are published per routing key.
    channel = f"/{db}.{EVENT_EXCHANGE}/task.sent" if settings.task_events else ""
    return BrokerList(
        queue_key=settings.queue, sent_event_channel=channel, step_queue_key=settings.agent_queue
    )


def _dumps(value: object) -> str:
    """kombu's JSON encoder, the one its transport and serializer use."""
    return str(kombu_json(value))  # type: ignore[no-untyped-call]


def _envelope(body: bytes, headers: dict[str, object], properties: dict[str, object]) -> str:
    """kombu's Redis transport message: base64 body, JSON everything."""
    properties |= {"priority": 0, "body_encoding": "base64", "delivery_tag": str(uuid.uuid4())}
    return _dumps(
        {
            "body": base64.b64encode(body).decode("ascii"),
            "content-encoding": "utf-8",
            "content-type": "application/json",
            "headers": headers,
            "properties": properties,
        }
    )


class TaskMessages:
    """Builds ``run_action`` messages as ``send_task`` would, without sending."""

    def __init__(self, app: Celery, task_name: str, queue: str, sent_events: bool) -> None:
        self.app = app
        self.task_name = task_name
        self.queue = queue
        self.sent_events = sent_events
        self.hostname = anon_nodename()

    def build(self, conversation_id: str, action_id: str, argsrepr: str) -> QueuedMessage:
        headers, properties, body, sent_event = self.app.amqp.as_task_v2(
            action_id,
            self.task_name,
            args=[conversation_id, action_id],
            kwargs={},
            reply_to=self.app.thread_oid,
            create_sent_event=self.sent_events,
            ignore_result=True,
            argsrepr=argsrepr,
            origin=self.hostname,
        )
        task = _envelope(
            _dumps(body).encode(),
            headers,
            properties
            | {
                # send_task passes its options on as message properties too.
                "argsrepr": argsrepr,
                "delivery_mode": 2,
                "delivery_info": {"exchange": "", "routing_key": self.queue},
            },
        )
        if not sent_event:
            return QueuedMessage(task, "")
        event = Event(
            "task-sent",
            hostname=self.hostname,
            utcoffset=utcoffset(),
            pid=os.getpid(),
            clock=self.app.clock.forward(),
            **sent_event,
            queue=self.queue,
            exchange="",
            routing_key=self.queue,
        )
        return QueuedMessage(
            task,
            _envelope(
                _dumps(event).encode(),
                {"hostname": self.hostname},
                {
                    "delivery_mode": 1,
                    "delivery_info": {"exchange": EVENT_EXCHANGE, "routing_key": "task.sent"},
                },
            ),
        )


STEP_TASK_PLACEHOLDER = "@@TASK@@"


def step_message_template(
    app: Celery, task_name: str, queue: str, conversation_id: str, argsrepr: str
) -> str:
    """The Celery message of a conversation's agent step, with the task id
    left as ``STEP_TASK_PLACEHOLDER``: the store's scripts fill in a fresh id
    each time they queue a step (``queue_step`` in _lib.lua). The body is kept
    as plain JSON (no ``body_encoding``, which kombu's Redis transport then
    reads as is) so that the id can be replaced inside the message; the body
    itself, ``[[conversation_id], {}, …]``, never holds the id. No task-sent
    event: its timestamp could not be filled in (Flower shows a step from
    its ``task-received``)."""
    headers, properties, body, _ = app.amqp.as_task_v2(
        STEP_TASK_PLACEHOLDER,
        task_name,
        args=[conversation_id],
        kwargs={},
        reply_to=app.thread_oid,
        create_sent_event=False,
        ignore_result=True,
        argsrepr=argsrepr,
        origin=anon_nodename(),
    )
    properties |= {
        "argsrepr": argsrepr,
        "delivery_mode": 2,
        "delivery_info": {"exchange": "", "routing_key": queue},
        "priority": 0,
        "delivery_tag": STEP_TASK_PLACEHOLDER,
    }
    return _dumps(
        {
            "body": _dumps(body),
            "content-encoding": "utf-8",
            "content-type": "application/json",
            "headers": headers,
            "properties": properties,
        }
    )
