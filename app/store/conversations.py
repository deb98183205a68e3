"""Conversations and their event streams: create, read, list, pause, resume.

``ConversationStore`` is the part of ``ActionStore`` (actionq.store.actions)
that needs no action: each state change is one Lua script; reads are plain
commands, O(page) whatever the length of the history.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from functools import partial

from redis.client import Pipeline

from actionq.errors import ConversationNotFound, InvalidArgumentsError, InvalidTransition
from actionq.models import (
    Conversation,
    Event,
    EventPage,
    conversation_id_problem,
    new_id,
    utc_now,
)
from actionq.store.client import RedisStore
from actionq.store.records import conversation_from_hash, event_from_entry

__all__ = ["ConversationStore"]


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

    def list_conversation_ids(self, offset: int = 0, limit: int = 100) -> list[str]:
        ids = self._call(
            lambda: self.redis.zrange(self.keys.conversation_index(), offset, offset + limit - 1)
        )
        return [str(i) for i in ids]

    def count_conversations(self) -> int:
        return int(self._call(lambda: self.redis.zcard(self.keys.conversation_index())))

    def search_conversations(
        self, start: int, limit: int, status: str | None, newest_first: bool, scan_limit: int
    ) -> tuple[list[Conversation], int | None]:
        """A page of conversations in creation order (``newest_first``: the
        other way), from position ``start`` of the index; with ``status``,
        only those, looking at no more than ``scan_limit`` conversations (a
        page may then hold fewer than ``limit``: follow the cursor). Returns
        the page and the position to go on from (None: the end)."""
        index = self.keys.conversation_index()
        read = self.redis.zrevrange if newest_first else self.redis.zrange
        found: list[Conversation] = []
        position = start
        budget = limit if status is None else scan_limit
        scanned = 0
        while len(found) < limit and scanned < budget:
            chunk = limit if status is None else min(500, budget - scanned)
            ids = self._call(partial(read, index, position, position + chunk - 1))
            for cid in ids:
                position += 1
                scanned += 1
                try:
                    conversation = self.get_conversation(str(cid))
                except ConversationNotFound:  # deleted since the index was read
                    continue
                if status is None or conversation.status.value == status:
                    found.append(conversation)
                    if len(found) == limit:
                        break
            if len(ids) < chunk and len(found) < limit:
                return found, None  # the end of the index
        return found, position if position < self.count_conversations() else None

    def count_conversations_with_status(self, status: str) -> int:
        count = 0
        for batch in _batched(self.iter_conversation_ids(), 500):

            def build(pipe: Pipeline, batch: list[str] = batch) -> None:
                for cid in batch:
                    pipe.hget(self.keys.conversation(cid), "status")

            count += sum(1 for value in self._pipelined(build) if value == status)
        return count

    def delete_conversation(self, conversation_id: str) -> None:
        """Delete the conversation and all that is stored with it
        (``InvalidTransition`` while it runs or waits for confirmation)."""
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
        result = self._script("delete_conversation", keys, [k.action(cid, "")])
        if result[0] == "no_conversation":
            raise ConversationNotFound(f"no conversation {cid!r}")
        if result[0] == "refused":
            raise InvalidTransition(
                f"conversation {cid} is {result[1]}; pause or interrupt it (or answer the "
                "confirmation) before deleting it"
            )
        action_ids = [str(i) for i in result[1:]]

        def unindex(pipe: Pipeline) -> None:
            pipe.zrem(k.conversation_index(), cid)
            if action_ids:
                pipe.hdel(k.action_index(), *action_ids)

        self._pipelined(unindex)

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


def _batched(items: Iterator[str], size: int) -> Iterator[list[str]]:
    batch: list[str] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch
