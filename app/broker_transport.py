"""kombu's Redis transport, with one change: the channel reuses its client.

Stock kombu (5.7) builds a new ``redis.Redis`` object in
``Channel.conn_or_acquire`` for every publish, every ack and every event
flush. With redis-py 8 that object copies its ~170-entry response-callback
table each time: py-spy put it at about a fifth of a busy worker's main
process (and a good part of every ``send_task``). The object is only a
façade over the channel's connection pool, which is thread-safe and
fork-aware, so one per pool does the same work. Nothing else changes:
same keys, same messages, same acks.

Used for ``redis://`` brokers (``celery_config``); ``ACTIONQ_BROKER_TRANSPORT``
can name another transport, e.g. ``redis`` for kombu's own.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from kombu.transport import redis as kombu_redis

__all__ = ["Channel", "Transport"]


class Channel(kombu_redis.Channel):
    _reused_client: Any = None

    @contextmanager
    def conn_or_acquire(self, client: Any = None) -> Iterator[Any]:
        if client:
            yield client
            return
        reused = self._reused_client
        # A closed channel drops its pool; a client of the old pool is not reused.
        if reused is None or reused.connection_pool is not self.pool:
            reused = self._reused_client = self._create_client()  # type: ignore[no-untyped-call]
        yield reused


class Transport(kombu_redis.Transport):
    Channel = Channel
