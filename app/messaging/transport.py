"""kombu's Redis transport, with two changes for the worker's hot path.

1. The channel reuses its client. Stock kombu (5.7) builds a new
   ``redis.Redis`` object in ``Channel.conn_or_acquire`` for every publish,
   every ack and every event flush; with redis-py 8 that object copies its
   ~170-entry response-callback table each time. py-spy put it at about a
   fifth of a busy worker's main process. The object is only a façade over
   the channel's connection pool (thread-safe, fork-aware), so one per pool
   does the same work.

2. Task events and acks are sent without waiting for Redis's reply, on a
   connection of their own with replies turned off (``CLIENT REPLY OFF``).
   The worker's main process is the one thread that feeds every pool
   process; each round trip it waits for is a moment no new task starts.
   This is safe for actionq, and only for it:

   - Celery's events are transient already (delivery mode 1, pub/sub: a
     subscriber that is not listening never sees them).
   - An ack that never reaches Redis (the connection broke mid-send) leaves
     the message in kombu's unacked set, so it is delivered again after the
     visibility timeout. Its action has ended by then, so the claim refuses
     it and nothing runs (``actionq.tasks.execution``). Redis executes the
     commands of one connection in order, so an ack is never applied before
     the delivery it acknowledges was recorded.

   The bookkeeping when a message is received (``QoS.append``) still waits
   for its reply: a message must be recorded as unacked before it runs.

Used for ``redis://`` brokers (``celery_config``); ``ACTIONQ_BROKER_TRANSPORT=redis``
selects kombu's own transport instead.

``BrokerConnection`` (the kombu connection class of actionq's Celery app, for
every transport) fixes kombu's teardown after a lost broker connection, which
used to kill the worker (``Unrecoverable error: AttributeError("'NoneType'
object has no attribute 'hostname'")``); see its docstring.
"""

# kombu and redis-py's connection classes are untyped.
# mypy: disable-error-code="no-untyped-call"

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import redis
from celery.app.amqp import AMQP
from kombu.connection import Connection
from kombu.transport import redis as kombu_redis
from kombu.transport import virtual
from kombu.utils.json import dumps

__all__ = ["BrokerConnection", "CeleryAMQP", "Channel", "Transport", "UnansweredCommands"]


class UnansweredCommands:
    """Commands sent on a connection whose replies are turned off: the
    caller never waits. One connection per process (re-made after a fork)."""

    def __init__(self, pool: redis.ConnectionPool) -> None:
        self.pool = pool
        self._connection: Any = None
        self._pid = 0

    def send(self, *commands: tuple[Any, ...]) -> None:
        connection = self._connection
        if connection is None or self._pid != os.getpid():
            connection = self.pool.make_connection()
            connection.connect()  # AUTH, SELECT and the handshake still get replies
            connection.send_command("CLIENT", "REPLY", "OFF")
            self._connection, self._pid = connection, os.getpid()
        try:
            # No health check: it would wait for a PONG that never comes.
            connection.send_packed_command(connection.pack_commands(commands), check_health=False)
        except (redis.ConnectionError, OSError):
            connection.disconnect()
            self._connection = None
            raise

    def close(self) -> None:
        if self._connection is not None and self._pid == os.getpid():
            self._connection.disconnect()
        self._connection = None


class QoS(kombu_redis.QoS):
    def ack(self, delivery_tag: str) -> None:
        if self.channel.global_keyprefix:  # keys are prefixed by kombu's client
            super().ack(delivery_tag)
            return
        self.channel.unanswered.send(
            ("MULTI",),
            ("ZREM", self.unacked_index_key, delivery_tag),
            ("HDEL", self.unacked_key, delivery_tag),
            ("EXEC",),
        )
        virtual.QoS.ack(self, delivery_tag)


class Channel(kombu_redis.Channel):
    QoS = QoS
    _reused_client: Any = None
    _unanswered: UnansweredCommands | None = None

    @contextmanager
    def conn_or_acquire(self, client: Any = None) -> Iterator[Any]:
        if client:
            yield client
            return
        reused = self._reused_client
        # A closed channel drops its pool; a client of the old pool is not reused.
        if reused is None or reused.connection_pool is not self.pool:
            reused = self._reused_client = self._create_client()
        yield reused

    @property
    def unanswered(self) -> UnansweredCommands:
        unanswered = self._unanswered
        if unanswered is None or unanswered.pool is not self.pool:
            unanswered = self._unanswered = UnansweredCommands(self.pool)
        return unanswered

    def _put_fanout(self, exchange: str, message: Any, routing_key: str, **kwargs: Any) -> None:
        """Fanout messages (task events, control broadcasts such as ``revoke``):
        pub/sub, which never tells the sender who got them; sent unanswered."""
        if kwargs.get("_publish_batch") is not None or self.global_keyprefix:
            super()._put_fanout(exchange, message, routing_key, **kwargs)
            return
        payload = dumps(message)
        topics = self._get_publish_topics(exchange, routing_key)
        self.unanswered.send(*(("PUBLISH", topic, payload) for topic in topics))

    def close(self) -> None:
        if self._unanswered is not None:
            self._unanswered.close()
        super().close()


class Transport(kombu_redis.Transport):
    Channel = Channel


class BrokerConnection(Connection):
    """A kombu connection whose transport keeps its client after ``collect()``.

    When the consumer loses the broker, Celery calls ``collect()`` and then
    ``close()`` on the dead connection (``Consumer.on_connection_error_after_connected``).
    ``collect()`` closes the channels but swallows the connection errors that
    doing so raises against a dead server, so a channel can be left open: the
    Redis channel's ``close()`` first reads the reply of the BRPOP it is waiting
    for (it fails, and only then is ``_in_poll`` cleared), and the transport's
    ``close_connection()`` stops at the first channel whose ``close()`` fails
    (the remote-control channel, deleting its fanout binding), before reaching
    the task channel. ``collect()`` then sets ``transport.client = None``; the
    ``close()`` that follows closes the task channel for real, whose
    ``restore_unacked_once()`` builds a new connection pool from
    ``transport.client`` and raises ``AttributeError``, which Celery does not
    treat as a connection error: the worker exits. The same pool rebuild
    happens when a task that ran through the outage is acknowledged on that
    old channel.

    The client is the connection's own URL, user and options, all still valid,
    so the transport keeps it: the restore then fails with a connection error
    (Redis is down; Celery ignores it, and the broker hands the message out
    again after the visibility timeout) or works (Redis is back), and the late
    ack reaches the new server. This is in kombu's ``Connection``, not in a
    transport, so it covers kombu's own Redis transport too, without
    monkeypatching kombu: Celery makes its connections from ``app.amqp.Connection``.
    """

    def collect(self, socket_timeout: float | None = None) -> None:
        transport = self._transport
        super().collect(socket_timeout)
        if transport is not None and transport.client is None:
            transport.client = self


class CeleryAMQP(AMQP):  # type: ignore[misc]  # Celery is untyped
    """Celery's AMQP helper with actionq's connection class (``Celery(amqp=...)``)."""

    Connection = BrokerConnection
