"""What must hold once the system is quiet, whatever faults happened."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from actionq.models import (
    TERMINAL_EVENT_KINDS,
    ActionEvent,
    AgentErrorEvent,
    ConversationStatus,
    ErrorCause,
    Event,
)
from actionq.store import ActionStore

# Causes of an action that never started its tool: its side effect must be absent.
_NEVER_STARTED = {ErrorCause.NOT_RUN, ErrorCause.UNKNOWN_TOOL, ErrorCause.INVALID_ARGUMENTS}


@dataclass
class Report:
    conversations: int = 0
    actions: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    statuses: Counter[str] = field(default_factory=Counter)
    violations: list[tuple[str, str]] = field(default_factory=list)  # (conversation, what)

    def violate(self, conversation_id: str, what: str) -> None:
        self.violations.append((conversation_id, what))


def _outcome(event: Event) -> str:
    if isinstance(event, AgentErrorEvent):
        return f"AgentErrorEvent:{event.detail.cause.value}"
    return event.kind


def check(
    store: ActionStore,
    conversation_ids: list[str],
    side_effect_log: Path,
    acknowledged: dict[str, set[str]] | None = None,
) -> Report:
    """``acknowledged``: per conversation, the action ids the API returned;
    each must be in the conversation's events."""
    report = Report()
    acknowledged = acknowledged or {}
    ran = Counter(side_effect_log.read_text().split()) if side_effect_log.exists() else Counter()
    all_actions: set[str] = set()
    for cid in conversation_ids:
        report.conversations += 1
        conversation = store.get_conversation(cid)
        report.statuses[conversation.status.value] += 1
        events = store.all_events(cid)
        actions = _check_events(report, cid, events, ran)
        all_actions.update(actions)
        # 0. nothing acknowledged is lost
        for lost in sorted(acknowledged.get(cid, set()) - actions):
            report.violate(cid, f"action {lost} was acknowledged but is not in the events")
        # 3. nothing left running without live work once quiet
        if conversation.status == ConversationStatus.RUNNING:
            report.violate(cid, "still running once the system is quiet")
        if conversation.active_action_id is not None:
            report.violate(cid, f"active action {conversation.active_action_id} once quiet")
    phantom = set(ran) - all_actions
    if phantom:
        report.violate("-", f"side effects of unknown actions: {sorted(phantom)[:5]}")
    return report


def _check_events(report: Report, cid: str, events: list[Event], ran: Counter[str]) -> set[str]:
    # 4. seq contiguous from 1, no duplicate event ids
    if [e.seq for e in events] != list(range(1, len(events) + 1)):
        report.violate(cid, "seq is not contiguous from 1")
    if len({e.id for e in events}) != len(events):
        report.violate(cid, "duplicate event ids")

    # 1. every ActionEvent has exactly one terminal event
    actions = [e for e in events if isinstance(e, ActionEvent)]
    terminal: dict[str, list[Event]] = {a.id: [] for a in actions}
    for event in events:
        if event.kind in TERMINAL_EVENT_KINDS:
            terminal.setdefault(getattr(event, "action_id", ""), []).append(event)
    for action_id, ends in terminal.items():
        report.actions += 1
        if len(ends) != 1:
            report.violate(cid, f"action {action_id} has {len(ends)} terminal events")
            continue
        end = ends[0]
        report.outcomes[_outcome(end)] += 1
        times = ran[action_id]
        # 2. at most once; an observation means it ran (nothing lost)
        if times > 1:
            report.violate(cid, f"action {action_id} ran {times} times")
        if end.kind == "ObservationEvent" and times != 1:
            report.violate(cid, f"action {action_id} has an observation but ran {times}x")
        if isinstance(end, AgentErrorEvent):
            # 5. a crash names its cause; never-started actions left no trace
            if end.detail.cause not in ErrorCause:
                report.violate(cid, f"action {action_id}: unknown cause")
            if end.detail.cause in _NEVER_STARTED and times:
                report.violate(cid, f"action {action_id} ({end.detail.cause}) ran {times}x")
    return {a.id for a in actions}
