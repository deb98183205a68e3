"""An archived conversation: its record, its agent, its events as stored,
its actions' records, and the digest that proves a copy equal to what
Redis held."""

from __future__ import annotations

import bisect
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from actionq.models import ActionRecord, Conversation, Event, EventPage
from actionq.store.records import ConversationExport, event_from_stored

__all__ = ["ARCHIVE_FORMAT", "ArchivedConversation", "canonical"]

# The JSONL header's "format"; a new layout gets a new one. /2 added the
# actions' records; a /1 copy (none) still reads, with no actions.
ARCHIVE_FORMAT = "actionq-archive/2"


def canonical(value: Any) -> str:
    """Compact JSON with sorted keys: the same text for the same value,
    whichever store it went through (PostgreSQL's jsonb reorders keys)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


@dataclass(frozen=True)
class ArchivedConversation:
    """``events``: (seq, the event as stored in Redis, without seq), in order;
    ``actions``: each action's record as JSON, in submission order."""

    conversation: Conversation
    agent_spec: dict[str, Any] | None
    confirmation_policy: dict[str, Any] | None
    events: list[tuple[int, dict[str, Any]]]
    archived_at: str
    actions: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def from_export(cls, export: ConversationExport, archived_at: str) -> ArchivedConversation:
        spec = json.loads(export.agent_spec_json) if export.agent_spec_json else None
        if isinstance(spec, dict) and isinstance(spec.get("model"), dict):
            # A sealed LLM key is still a secret, and an archived conversation
            # never runs again: it is not copied.
            spec["model"].pop("api_key_sealed", None)
        policy = json.loads(export.policy_json) if export.policy_json else None
        return cls(
            conversation=export.conversation,
            agent_spec=spec,
            confirmation_policy=policy,
            events=[(seq, json.loads(stored)) for seq, stored in export.events],
            archived_at=archived_at,
            actions=[action.model_dump(mode="json") for action in export.actions],
        )

    @property
    def id(self) -> str:
        return self.conversation.id

    def header(self) -> dict[str, Any]:
        """Everything but the events (what the digest covers besides them)."""
        return {
            "conversation": self.conversation.model_dump(mode="json"),
            "agent_spec": self.agent_spec,
            "confirmation_policy": self.confirmation_policy,
        }

    @property
    def digest(self) -> str:
        """sha256 of the header, every (seq, event) and every action,
        canonical JSON (with no actions, the same as a /1 copy's)."""
        digest = hashlib.sha256(canonical(self.header()).encode())
        for seq, event in self.events:
            digest.update(f"\n{seq}\t{canonical(event)}".encode())
        for action in self.actions:
            digest.update(f"\naction\t{canonical(action)}".encode())
        return "sha256:" + digest.hexdigest()

    def agent_spec_json(self) -> str | None:
        return None if self.agent_spec is None else json.dumps(self.agent_spec)

    def policy(self) -> dict[str, Any] | None:
        return self.confirmation_policy

    # --- reading it as the store's reads would ---
    def event(self, seq: int, stored: dict[str, Any]) -> Event:
        # Through JSON, as Redis' copy is read: the same event, field by field.
        return event_from_stored(json.dumps(stored), seq)

    def list_events(self, after_seq: int = 0, limit: int = 100) -> EventPage:
        """As ``ConversationStore.list_events``: seq > after_seq, at most ``limit``."""
        start = bisect.bisect_right(self.events, after_seq, key=lambda entry: entry[0])
        chosen = self.events[start : start + limit]
        items = [self.event(seq, stored) for seq, stored in chosen]
        return EventPage(items=items, next_after_seq=items[-1].seq if len(items) == limit else None)

    def all_events(self) -> list[Event]:
        return [self.event(seq, stored) for seq, stored in self.events]

    def action(self, action_id: str) -> ActionRecord | None:
        for action in self.actions:
            if action.get("id") == action_id:
                return ActionRecord.model_validate(action)
        return None

    def find_event(self, event_id: str) -> Event | None:
        for seq, stored in self.events:
            if stored.get("id") == event_id:
                return self.event(seq, stored)
        return None
