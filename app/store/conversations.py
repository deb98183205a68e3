"""Conversations and their event streams: create, read, list, pause, resume.

``ConversationStore`` is the part of ``ActionStore`` (actionq.store.actions)
that needs no action: each state change is one Lua script; reads are plain
commands, O(page) whatever the length of the history.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

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
