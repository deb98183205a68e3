"""Conversations and their event streams: create, read, list, pause, resume.

``ConversationStore`` is the part of ``ActionStore`` (actionq.store.actions)
that needs no action: each state change is one Lua script; reads are plain
commands, O(page) whatever the length of the history.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial

from redis.client import Pipeline

from actionq.errors import ConversationNotFound, InvalidArgumentsError, InvalidTransition
from actionq.models import (
    ActionRecord,
    Conversation,
    ConversationStatus,
    Event,
    EventPage,
    conversation_id_problem,
    new_id,
    utc_now,
)
from actionq.store.client import RedisStore
from actionq.store.records import (
    ConversationExport,
    action_from_hash,
    conversation_from_hash,
    event_from_entry,
)

__all__ = ["STATUS_INDEX_VERSION", "ConversationListing", "ConversationStore"]

# The per-status index's layout; a new one (another backfill) gets a new version.
STATUS_INDEX_VERSION = "2"
# The revision of a move for a conversation that no longer exists: above any.
_GONE = 2**53


class ConversationStore(RedisStore):
    """Conversations and events in Redis."""

    def create_conversation(self, conversation_id: str | None = None) -> Conversation:
        return self.create_conversation_checked(conversation_id)[0]

    def create_conversation_checked(
        self,
        conversation_id: str | None = None,
        *,
        agent_spec_json: str = "",
        max_iterations: int = 0,
        step_message_template: str = "",
    ) -> tuple[Conversation, bool]:
        """The conversation, and whether this call created it (False: it
        existed, and keeps its own agent). With ``agent_spec_json`` it has an
        agent (``actionq.agent.spec.AgentSpec``), stored with it in one step."""
        cid = conversation_id or new_id()
        # The id names the conversation's workspace folder: one safe component.
        problem = conversation_id_problem(cid)
        if problem is not None:
            raise InvalidArgumentsError(problem)
        now = utc_now()
        # Index first: a conversation may be listed a moment before it exists,
        # never exist without being found by start-up recovery.
        self._call(
            lambda: self.redis.zadd(self.keys.conversation_index(), {cid: time.time()}, nx=True)
        )
        created = self._script(
            "create_conversation",
            [self.keys.conversation(cid), self.keys.agent(cid)],
            [cid, now, agent_spec_json, max_iterations, step_message_template],
        )
        return self.get_conversation(cid), bool(created)

    def get_conversation(self, conversation_id: str) -> Conversation:
        k = self.keys

        def build(pipe: Pipeline) -> None:
            pipe.hgetall(k.conversation(conversation_id))
            pipe.llen(k.queue(conversation_id))
            pipe.llen(k.confirmations(conversation_id))

        raw, queued, held = self._pipelined(build)
        if not raw:
            raise ConversationNotFound(f"no conversation {conversation_id!r}")
        return conversation_from_hash(raw, int(queued), int(held))

    def conversation_exists(self, conversation_id: str) -> bool:
        return bool(self._call(lambda: self.redis.exists(self.keys.conversation(conversation_id))))

    def list_conversation_ids(self, offset: int = 0, limit: int = 100) -> list[str]:
        ids = self._call(
            lambda: self.redis.zrange(self.keys.conversation_index(), offset, offset + limit - 1)
        )
        return [str(i) for i in ids]

    def count_conversations(self) -> int:
        return int(self._call(lambda: self.redis.zcard(self.keys.conversation_index())))

    def search_conversations(
        self, start: int, limit: int, status: str | None, newest_first: bool
    ) -> tuple[list[Conversation], int | None]:
        """A page of conversations in creation order (``newest_first``: the
        other way), from position ``start`` of the index (with ``status``, of
        that status's index). Returns the page and the position to go on from
        (None: the end). Two round trips whatever the number of conversations:
        the page's ids (with the index's size), then the page's hashes."""
        index = self.keys.conversation_index() if status is None else self.keys.status_index(status)

        def read_ids(pipe: Pipeline) -> None:
            if newest_first:
                pipe.zrevrange(index, start, start + limit - 1)
            else:
                pipe.zrange(index, start, start + limit - 1)
            pipe.zcard(index)

        ids, size = self._pipelined(read_ids)
        found = self.get_conversations([str(i) for i in ids])
        end = start + len(ids)
        return [c for c in found if c is not None], end if end < int(size) else None

    def get_conversations(self, conversation_ids: list[str]) -> list[Conversation | None]:
        """Each conversation (None: there is none of that id), in one round trip."""
        k = self.keys

        def build(pipe: Pipeline) -> None:
            for cid in conversation_ids:
                pipe.hgetall(k.conversation(cid))
                pipe.llen(k.queue(cid))
                pipe.llen(k.confirmations(cid))

        if not conversation_ids:
            return []
        replies = self._pipelined(build)
        return [
            conversation_from_hash(raw, int(queued), int(held)) if raw else None
            for raw, queued, held in zip(replies[0::3], replies[1::3], replies[2::3], strict=True)
        ]

    def page_conversations(
        self, status: str | None, after: str | None, limit: int
    ) -> ConversationListing:
        """Newest first, the conversations (with ``status``: of that status)
        after the cursor ``after`` (a ``next_page_id`` of an earlier page;
        None: from the newest), at most ``limit``, and how many there are.

        O(limit + log n) and three round trips whatever the number of
        conversations: the cursor's rank and the count, the page's ids, the
        page's hashes. The cursor is the last row's score and id, so a
        conversation created while a client pages does not shift the pages;
        if that row has left the index (deleted, or its status changed) the
        page goes on below its score."""
        index = self.keys.conversation_index() if status is None else self.keys.status_index(status)
        cursor = None if after is None else _parse_cursor(after)

        def rank_and_total(pipe: Pipeline) -> None:
            pipe.zcard(index)
            if cursor is not None:
                pipe.zrevrank(index, cursor[1])

        total, *rank = self._pipelined(rank_and_total)
        # One more than the page, to know whether another page follows.
        if cursor is None:
            read = partial(self.redis.zrevrange, index, 0, limit, withscores=True)
        elif rank[0] is not None:
            start = int(rank[0]) + 1
            read = partial(self.redis.zrevrange, index, start, start + limit, withscores=True)
        else:
            read = partial(
                self.redis.zrevrangebyscore,
                index,
                f"({cursor[0]!r}",
                "-inf",
                0,
                limit + 1,
                withscores=True,
            )
        entries = [(str(cid), float(score)) for cid, score in self._call(read)]
        page, more = entries[:limit], len(entries) > limit
        found = self.get_conversations([cid for cid, _ in page])
        next_page_id = f"{page[-1][1]!r}:{page[-1][0]}" if more else None
        return ConversationListing(
            items=[c for c in found if c is not None], next_page_id=next_page_id, total=int(total)
        )

    def count_conversations_with_status(self, status: str) -> int:
        return int(self._call(lambda: self.redis.zcard(self.keys.status_index(status))))

    def backfill_status_index(self, batch: int = 500) -> int | None:
        """Build the per-status index from the conversations (once: a version
        marker says it was done). Returns how many were indexed, or None if
        the marker was there. The sweeper runs ``reconcile_status_index``
        itself under Cluster (docs/design.md, "The per-status index")."""
        marker = self.keys.status_index_version()
        if self._call(lambda: self.redis.get(marker)) == STATUS_INDEX_VERSION:
            return None
        indexed = self.reconcile_status_index(batch)
        # Version 1 kept the sets under other names (not on the index's slot).
        legacy = [self.keys.legacy_status_index(status.value) for status in ConversationStatus]
        for key in legacy:  # one by one: under Cluster they are on different slots
            self._call(partial(self.redis.delete, key))
        self._call(lambda: self.redis.set(marker, STATUS_INDEX_VERSION))
        return indexed

    def reconcile_status_index(self, batch: int = 500) -> int:
        """Put every conversation in the per-status set of its status, in
        batches of ``batch``: read each one's status and its revision, then
        apply them as moves (``apply_status_moves``), so a transition that
        lands between the read and the write keeps its newer move. Idempotent;
        two processes running it at once agree. Returns how many it read."""
        indexed = 0
        index = self.keys.conversation_index()
        # Paged by score, not position: a conversation deleted meanwhile
        # would shift positions and make a page skip one. `skip` counts the
        # entries at `low` already done (scores are creation times, rarely equal).
        low, skip = float("-inf"), 0
        while True:
            page = self._call(
                partial(self.redis.zrangebyscore, index, low, "+inf", skip, batch, withscores=True)
            )
            if not page:
                break
            ids = [str(cid) for cid, _ in page]

            def read(pipe: Pipeline, ids: list[str] = ids) -> None:
                for cid in ids:
                    pipe.hmget(self.keys.conversation(cid), ["status", "status_rev"])

            moves: list[str | int] = []
            for cid, (status, revision) in zip(ids, self._pipelined(read), strict=True):
                # Gone (deleted since it was listed): out of every set.
                moves += [cid, int(revision or 0), status or ""] if status else [cid, _GONE, ""]
            self.apply_status_moves(moves)
            indexed += len(ids)
            last = float(page[-1][1])
            at_last = sum(1 for _, score in page if float(score) == last)
            low, skip = (low, skip + len(page)) if last == low else (last, at_last)
            if len(page) < batch:
                break
        return indexed

    def delete_conversation(
        self, conversation_id: str, *, unless_changed_since: ConversationExport | None = None
    ) -> bool:
        """Delete the conversation and all that is stored with it
        (``InvalidTransition`` while it runs or waits for confirmation).

        With ``unless_changed_since`` (archival) nothing is deleted if its
        status, ``last_seq`` or ``updated_at`` differ from the export's: it
        changed after it was copied. Returns whether it was deleted."""
        k = self.keys
        cid = conversation_id
        keys = [
            k.conversation(cid),
            k.events(cid),
            k.queue(cid),
            k.actions(cid),
            k.idempotency(cid),
            k.tool_calls(cid),
            k.crashes(cid),
            k.retries(cid),
            k.agent(cid),
            k.confirmations(cid),
        ]
        args = [k.action(cid, "")]
        if unless_changed_since is not None:
            seen = unless_changed_since
            args += [seen.status, seen.last_seq, seen.updated_at]
        result = self._script("delete_conversation", keys, args)
        if result[0] == "no_conversation":
            raise ConversationNotFound(f"no conversation {cid!r}")
        if result[0] == "refused":
            raise InvalidTransition(
                f"conversation {cid} is {result[1]}; pause or interrupt it (or answer the "
                "confirmation) before deleting it"
            )
        if result[0] == "changed":
            return False
        action_ids = [str(i) for i in result[1:]]

        def unindex(pipe: Pipeline) -> None:
            pipe.zrem(k.conversation_index(), cid)
            if action_ids:
                pipe.hdel(k.action_index(), *action_ids)

        self._pipelined(unindex)
        return True

    def export_conversation(self, conversation_id: str, chunk: int = 1000) -> ConversationExport:
        """The conversation, its agent, all its events and its actions' records,
        for archival.

        The record and the agent are read in one MULTI (one slot: a
        consistent moment); the events up to that moment's ``last_seq`` are
        then read in chunks (events are never changed once written, so the
        later reads cannot disagree with it), then the actions of that
        moment's list (an action that still ends afterwards, e.g. one in
        flight when its conversation was paused, moves ``last_seq``, which
        the removal compares: then nothing is removed)."""
        k = self.keys
        cid = conversation_id
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.hgetall(k.conversation(cid))
            pipe.llen(k.queue(cid))
            pipe.llen(k.confirmations(cid))
            pipe.hmget(k.agent(cid), ["spec", "policy"])
            pipe.lrange(k.actions(cid), 0, -1)
            raw, queued, held, (spec, policy), action_ids = self._call(pipe.execute)
        if not raw:
            raise ConversationNotFound(f"no conversation {cid!r}")
        conversation = conversation_from_hash(raw, int(queued), int(held))
        last_seq = int(raw.get("last_seq", 0))
        events: list[tuple[int, str]] = []
        after = 0
        while after < last_seq:
            entries = self._call(
                partial(
                    self.redis.xrange,
                    k.events(cid),
                    min=f"{after + 1}-0",
                    max=f"{last_seq}-0",
                    count=chunk,
                )
            )
            if not entries:
                break
            events += [(int(str(eid).split("-", 1)[0]), str(f["e"])) for eid, f in entries]
            after = events[-1][0]
        actions: list[ActionRecord] = []
        for start in range(0, len(action_ids), chunk):
            with self.redis.pipeline(transaction=False) as pipe:
                for action_id in action_ids[start : start + chunk]:
                    pipe.hgetall(k.action(cid, action_id))
                actions += [action_from_hash(a) for a in self._call(pipe.execute) if a]
        return ConversationExport(
            conversation=conversation,
            agent_spec_json=str(spec) if spec else None,
            policy_json=str(policy) if policy else None,
            events=events,
            actions=actions,
            status=str(raw["status"]),
            last_seq=str(raw.get("last_seq", "0")),
            updated_at=str(raw.get("updated_at", "")),
        )

    def conversations_with_status(
        self, status: str, after_score: float | None, limit: int
    ) -> list[tuple[str, float, str]]:
        """Up to ``limit`` conversations of the per-status index of ``status``
        created after ``after_score`` (None: from the oldest), each as (id,
        score, ``updated_at``; '' if it is gone meanwhile): two round trips."""
        low = "-inf" if after_score is None else f"({after_score!r}"
        page = self._call(
            partial(
                self.redis.zrangebyscore,
                self.keys.status_index(status),
                low,
                "+inf",
                0,
                limit,
                withscores=True,
            )
        )
        if not page:
            return []
        entries = [(str(cid), float(score)) for cid, score in page]

        def read(pipe: Pipeline) -> None:
            for cid, _ in entries:
                pipe.hget(self.keys.conversation(cid), "updated_at")

        updated = self._pipelined(read)
        return [
            (cid, score, str(at or "")) for (cid, score), at in zip(entries, updated, strict=True)
        ]

    def take_turn(self, name: str, owner: str, seconds: float) -> bool:
        """A short lease on a named periodic job (e.g. archival), so that of
        many workers one does it at a time; it lapses by itself."""
        return bool(
            self._call(
                partial(
                    self.redis.set, self.keys.turn(name), owner, nx=True, px=int(seconds * 1000)
                )
            )
        )

    def end_turn(self, name: str, owner: str) -> None:
        """Give the turn back (only if it is still ``owner``'s)."""
        self._script("end_turn", [self.keys.turn(name)], [owner])

    def find_event(self, conversation_id: str, event_id: str) -> Event | None:
        """The event with this id (a scan of the history: O(history))."""
        after = 0
        while True:
            page = self.list_events(conversation_id, after, 1000)
            for event in page.items:
                if event.id == event_id:
                    return event
            if page.next_after_seq is None:
                return None
            after = page.next_after_seq

    def iter_conversation_ids(self, batch: int = 500) -> Iterator[str]:
        offset = 0
        while True:
            ids = self.list_conversation_ids(offset, batch)
            yield from ids
            if len(ids) < batch:
                return
            offset += batch

    def resume_conversation(self, conversation_id: str) -> str | None:
        """error|paused -> running (or idle if nothing is queued).

        Returns the action that must now be sent with Celery, if any (with
        direct enqueue its kept message is pushed by this same step). Raises
        ``InvalidTransition`` when the conversation is not in error or paused,
        so two concurrent resumes cannot both succeed.
        """
        k = self.keys
        cid = conversation_id
        keys = [k.conversation(cid), k.events(cid), k.queue(cid)]
        args = [utc_now(), new_id(), k.action(cid, "")]
        if self.broker is not None:
            keys.append(self.broker.queue_key)
            args.append(self.broker.sent_event_channel)
        result = self._script("resume_conversation", keys, args)
        if result[0] == "no_conversation":
            raise ConversationNotFound(f"no conversation {cid!r}")
        if result[0] == "refused":
            raise InvalidTransition(
                f"conversation {cid} is {result[1]}; only a conversation in error or paused "
                "can be resumed"
            )
        return None if int(result[3]) else (str(result[2]) or None)

    def pause_conversation(self, conversation_id: str, *, interrupt: bool = False) -> str | None:
        """-> paused (nothing new is dispatched). Returns the active action id.
        With ``interrupt`` the agent step in flight is dropped too.

        Raises ``InvalidTransition`` for a conversation in error (resume it
        first) or waiting for confirmation (confirm or reject first).
        """
        k = self.keys
        cid = conversation_id
        result = self._script(
            "pause_conversation",
            [k.conversation(cid), k.events(cid), k.agent(cid)],
            [utc_now(), new_id(), "1" if interrupt else "0"],
        )
        if result[0] == "no_conversation":
            raise ConversationNotFound(f"no conversation {cid!r}")
        if result[0] == "refused":
            raise InvalidTransition(f"conversation {cid} is {result[1]}; it cannot be paused")
        return str(result[1]) or None

    def list_events(self, conversation_id: str, after_seq: int = 0, limit: int = 100) -> EventPage:
        """Events with seq > after_seq, at most ``limit``: O(limit), not O(history)."""
        if not self._call(lambda: self.redis.exists(self.keys.conversation(conversation_id))):
            raise ConversationNotFound(f"no conversation {conversation_id!r}")
        entries = self._call(
            lambda: self.redis.xrange(
                self.keys.events(conversation_id), min=f"{after_seq + 1}-0", count=limit
            )
        )
        items: list[Event] = [event_from_entry(entry_id, fields) for entry_id, fields in entries]
        next_after = items[-1].seq if len(items) == limit else None
        return EventPage(items=items, next_after_seq=next_after)

    def all_events(self, conversation_id: str) -> list[Event]:
        events: list[Event] = []
        after = 0
        while True:
            page = self.list_events(conversation_id, after, 1000)
            events += page.items
            if page.next_after_seq is None:
                return events
            after = page.next_after_seq


@dataclass(frozen=True)
class ConversationListing:
    """A page of ``page_conversations``: the rows, the cursor of the next page
    (None: the last page) and the number of conversations listed by it."""

    items: list[Conversation]
    next_page_id: str | None
    total: int


def _parse_cursor(page_id: str) -> tuple[float, str]:
    """``<score>:<conversation id>`` (InvalidArgumentsError if not)."""
    score, _, conversation_id = page_id.partition(":")
    try:
        value = float(score)
    except ValueError:
        value = float("nan")
    if value != value or not conversation_id:  # NaN: not a score
        raise InvalidArgumentsError(f"page_id {page_id!r} is not a page id this API gave")
    return value, conversation_id
