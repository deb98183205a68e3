"""Every key of actionq's state, built in one place; nothing else spells one.
The broker's keys are kombu's (``actionq.messaging.direct_enqueue`` names
the queue list and event channel the store's scripts push to).

Per-conversation keys carry the conversation id as a hash tag (``{id}``), so
one conversation's keys live on one Redis Cluster slot and each transition
(one Lua script) touches a single slot. The few global keys are indexes that
are updated with separate commands and are safe to be briefly stale. The
per-status index shares the main index's slot (its keys carry the main
index's name as hash tag): on one Redis the status-changing scripts keep it
exact themselves, under Cluster the caller applies each script's move
(docs/design.md, "The per-status index").
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Keys"]


@dataclass(frozen=True)
class Keys:
    prefix: str = "actionq"

    def __post_init__(self) -> None:
        # A brace would become the hash tag of every key (Redis Cluster).
        if "{" in self.prefix or "}" in self.prefix:
            raise ValueError(f"key prefix {self.prefix!r} may not contain '{{' or '}}'")

    def _conv(self, conversation_id: str) -> str:
        return f"{self.prefix}:{{{conversation_id}}}"

    # --- per conversation (one hash slot) ---
    def conversation(self, conversation_id: str) -> str:
        """Hash: status, timestamps, last_seq, the active action."""
        return self._conv(conversation_id) + ":conv"

    def events(self, conversation_id: str) -> str:
        """Stream: one entry per event, entry id ``<seq>-0``."""
        return self._conv(conversation_id) + ":events"

    def queue(self, conversation_id: str) -> str:
        """List: action ids waiting for their turn, in submission order."""
        return self._conv(conversation_id) + ":queue"

    def actions(self, conversation_id: str) -> str:
        """List: every action id of the conversation, in submission order."""
        return self._conv(conversation_id) + ":actions"

    def idempotency(self, conversation_id: str) -> str:
        """Hash: idempotency key -> action id."""
        return self._conv(conversation_id) + ":idempotency"

    def tool_calls(self, conversation_id: str) -> str:
        """Hash: tool_call_id -> action id (tool_call_id is unique per conversation)."""
        return self._conv(conversation_id) + ":tool-calls"

    def crashes(self, conversation_id: str) -> str:
        """Hash: action fingerprint -> number of crashes."""
        return self._conv(conversation_id) + ":crashes"

    def retries(self, conversation_id: str) -> str:
        """Hash: action fingerprint -> the id of its latest retry."""
        return self._conv(conversation_id) + ":retries"

    def agent(self, conversation_id: str) -> str:
        """Hash: the agent's spec, its step template and the current step's state."""
        return self._conv(conversation_id) + ":agent"

    def confirmations(self, conversation_id: str) -> str:
        """List: ids of the agent's calls waiting for the user's confirmation."""
        return self._conv(conversation_id) + ":confirm"

    def action(self, conversation_id: str, action_id: str) -> str:
        """Hash: the action's state (see ``ActionRecord``)."""
        return self._conv(conversation_id) + f":action:{action_id}"

    def output_tail(self, conversation_id: str, action_id: str) -> str:
        """String (with a TTL): the last output of the action's running command,
        copied by its tool process after 0.5 s, then at most every 0.5 s, for a sweeper on
        another host if the whole worker dies."""
        return self._conv(conversation_id) + f":output-tail:{action_id}"

    # --- global indexes ---
    def conversation_index(self) -> str:
        """Sorted set: conversation id scored by creation time."""
        return f"{self.prefix}:conversations"

    def _index_slot(self) -> str:
        # The main index's own name as hash tag: these keys share its slot.
        return f"{self.prefix}:{{{self.conversation_index()}}}"

    def status_index(self, status: str) -> str:
        """Sorted set: the conversations whose status is ``status``, scored as
        in ``conversation_index`` (``status_index("")`` is the prefix the Lua
        scripts append a status to)."""
        return f"{self._index_slot()}:status:{status}"

    def status_revisions(self) -> str:
        """Hash: conversation id -> the revision of its status the per-status
        index holds (a move of an older revision is ignored)."""
        return f"{self._index_slot()}:status-revisions"

    def legacy_status_index(self, status: str) -> str:
        """Where version 1 of the per-status index kept ``status`` (removed
        by the backfill that builds version 2)."""
        return f"{self.prefix}:conversations:status:{status}"

    def status_index_version(self) -> str:
        """String: the version of the per-status index the backfill last
        completed (absent: conversations older than the index may be missing)."""
        return f"{self.prefix}:conversations:status-index-version"

    def turn(self, name: str) -> str:
        """String (with a TTL): who runs the periodic job ``name`` now (archival)."""
        return f"{self.prefix}:turn:{name}"

    def action_index(self) -> str:
        """Hash: action id -> conversation id."""
        return f"{self.prefix}:action-conversation"

    # --- workers (one hash slot, so a worker can be forgotten atomically) ---
    def worker_leases(self) -> str:
        """Sorted set: worker id scored by lease expiry (Redis server time, seconds)."""
        return f"{self.prefix}:{{workers}}:leases"

    def worker_info(self, worker_id: str) -> str:
        """Hash: host, pid, started_at of a worker."""
        return f"{self.prefix}:{{workers}}:info:{worker_id}"

    def worker_claims(self, worker_id: str) -> str:
        """Set: ``conversation_id/action_id`` of claims a worker may hold."""
        return f"{self.prefix}:{{workers}}:claims:{worker_id}"
