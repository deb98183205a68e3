"""Worker leases and claim indexes (part of the store: only it knows key names).

A lease is a worker id in a sorted set scored by its expiry, in Redis server
time; a claim index is the set of actions a worker may hold.
"""

from __future__ import annotations

from actionq.models import utc_now
from actionq.store.client import RedisStore
from actionq.store.records import WorkerIdentity

__all__ = ["WorkerLeases"]


class WorkerLeases(RedisStore):
    """Who is alive, and what each worker may hold."""

    def renew_worker_lease(self, worker: WorkerIdentity, lease_seconds: float) -> float:
        """Extend the worker's lease by ``lease_seconds`` from now (server time)."""
        expiry = self._script(
            "renew_lease", [self.keys.worker_leases()], [worker.id, lease_seconds]
        )
        return float(expiry)

    def register_worker(self, worker: WorkerIdentity, lease_seconds: float) -> None:
        self._call(
            lambda: self.redis.hset(
                self.keys.worker_info(worker.id),
                mapping={"host": worker.host, "pid": worker.pid, "started_at": utc_now()},
            )
        )
        self.renew_worker_lease(worker, lease_seconds)

    def release_worker_lease(self, worker: WorkerIdentity) -> None:
        """A clean shutdown: the worker is gone now, not in ``lease_seconds``."""
        self._call(lambda: self.redis.zadd(self.keys.worker_leases(), {worker.id: 0}))

    def is_worker_alive(self, worker_id: str, now: float | None = None) -> bool:
        expiry = self._call(lambda: self.redis.zscore(self.keys.worker_leases(), worker_id))
        return expiry is not None and float(expiry) > (
            now if now is not None else self.server_time()
        )

    def expired_worker_ids(self, now: float | None = None) -> list[str]:
        now = self.server_time() if now is None else now
        ids = self._call(lambda: self.redis.zrangebyscore(self.keys.worker_leases(), "-inf", now))
        return [str(i) for i in ids]

    def live_worker_ids(self, now: float | None = None) -> list[str]:
        now = self.server_time() if now is None else now
        ids = self._call(
            lambda: self.redis.zrangebyscore(self.keys.worker_leases(), f"({now}", "+inf")
        )
        return [str(i) for i in ids]

    def worker_claim_refs(self, worker_id: str) -> list[tuple[str, str]]:
        refs = self._call(lambda: self.redis.smembers(self.keys.worker_claims(worker_id)))
        pairs = [str(ref).split("/", 1) for ref in refs]
        return [(pair[0], pair[1]) for pair in pairs]

    def forget_worker_claim(self, worker_id: str, conversation_id: str, action_id: str) -> None:
        self._call(
            lambda: self.redis.srem(
                self.keys.worker_claims(worker_id), f"{conversation_id}/{action_id}"
            )
        )

    def forget_worker(self, worker_id: str, now: float) -> bool:
        """Drop a dead worker whose claims are all settled (it must still be
        expired at ``now``: a stalled worker that came back is kept)."""
        k = self.keys
        result = self._script(
            "forget_worker",
            [k.worker_leases(), k.worker_claims(worker_id), k.worker_info(worker_id)],
            [worker_id, now],
        )
        return bool(result)

    def lease_expiry(self, worker_id: str) -> float | None:
        expiry = self._call(lambda: self.redis.zscore(self.keys.worker_leases(), worker_id))
        return float(expiry) if expiry is not None else None
