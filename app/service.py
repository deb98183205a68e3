"""The Python API: what an agent server (or the HTTP API) calls.

aq = ActionQ()
conversation = aq.create_conversation()
action = aq.submit_action(conversation.id, "terminal", {"command": "ls"})
aq.wait_for_action(action.id)
page = aq.list_events(conversation.id)
"""

from __future__ import annotations

import functools
import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from functools import cached_property, partial
from typing import Any, Concatenate, NamedTuple, ParamSpec, TypeVar

from celery import Celery
from pydantic import ValidationError

from actionq.agent.spec import AgentSpec, AlwaysConfirm, ConfirmRisky, NeverConfirm
from actionq.archive import ArchivedConversation, ArchiveSink, open_sink
from actionq.crashes.stop import cancel_action
from actionq.crashes.sweep import sweep_expired_leases
from actionq.errors import (
    ActionNotFound,
    ActionqError,
    ArchiveUnavailableError,
    ConversationArchived,
    ConversationNotFound,
    InvalidArgumentsError,
    InvalidTransition,
)
from actionq.messaging.direct_enqueue import TaskMessages, broker_list_for, step_message_template
from actionq.messaging.dispatch import (
    Dispatch,
    action_argsrepr,
    resend_turn,
    send_action,
    send_work,
    step_argsrepr,
    step_sender,
)
from actionq.models import (
    ActionRecord,
    ActionState,
    Conversation,
    ConversationStatus,
    Event,
    EventPage,
    LLMMessage,
    MessageEvent,
    new_id,
    validation_error_text,
)
from actionq.settings import Settings, get_settings
from actionq.store import ActionStore
from actionq.store.follow import EventFollower
from actionq.store.records import QueuedMessage, RunResult, SubmitResult, canonical_json
from actionq.tools import get_tool

__all__ = ["ActionQ", "Submitted"]

log = logging.getLogger(__name__)

_P = ParamSpec("_P")
_R = TypeVar("_R")
# Archived conversations read from the archive, kept for the next page's read.
_ARCHIVE_CACHE_SIZE = 16


def _read_only_if_archived(
    method: Callable[Concatenate[ActionQ, str, _P], _R],
) -> Callable[Concatenate[ActionQ, str, _P], _R]:
    """A change to a conversation that is not in Redis because it was
    archived is ``ConversationArchived`` (409), not "not found": it exists,
    read-only. Asked only after the store found no conversation, so a change
    to a live one costs nothing more."""

    def refusing(self: ActionQ, conversation_id: str, /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            return method(self, conversation_id, *args, **kwargs)
        except ConversationNotFound:
            self.refuse_if_archived(conversation_id)
            raise

    functools.update_wrapper(refusing, method)
    return refusing


class ActionQ:
    """Conversations and their actions. Thread-safe; one per process is enough."""

    def __init__(self, settings: Settings | None = None, store: ActionStore | None = None) -> None:
        self.settings = settings or get_settings()
        self.store = store or ActionStore.from_settings(
            self.settings, broker_list_for(self.settings)
        )

    def close(self) -> None:
        """Close this client's connections (Redis; the broker, if used; the archive)."""
        self.store.redis.close()
        if self.__dict__.get("archive") is not None:
            self.archive.close()  # type: ignore[union-attr]
        if "celery_app" in self.__dict__:
            self.celery_app.close()

    def __enter__(self) -> ActionQ:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @cached_property
    def archive(self) -> ArchiveSink | None:
        """Where archived conversations are read (None: no ACTIONQ_ARCHIVE_URL)."""
        if not self.settings.archive_url:
            return None
        return open_sink(self.settings.archive_url, self.settings.archive_pg_schema)

    @cached_property
    def _archived_cache(self) -> tuple[threading.Lock, OrderedDict[str, ArchivedConversation]]:
        return threading.Lock(), OrderedDict()

    def archived_conversation(self, conversation_id: str) -> ArchivedConversation | None:
        """The archived copy of the conversation (None: not archived, or no
        archive). Only asked when Redis has no such conversation; an archived
        copy never changes, so the last few read are kept."""
        if self.archive is None:
            return None
        lock, cache = self._archived_cache
        with lock:
            if conversation_id in cache:
                cache.move_to_end(conversation_id)
                return cache[conversation_id]
        archived = self.archive.read(conversation_id)
        if archived is not None:
            with lock:
                cache[conversation_id] = archived
                while len(cache) > _ARCHIVE_CACHE_SIZE:
                    cache.popitem(last=False)
        return archived

    def _archived_or_raise(
        self, conversation_id: str, error: ConversationNotFound
    ) -> ArchivedConversation:
        archived = self.archived_conversation(conversation_id)
        if archived is None:
            raise error
        return archived

    def refuse_if_archived(self, conversation_id: str) -> None:
        """``ConversationArchived`` if the conversation is archived (and not in Redis)."""
        if self.archived_conversation(conversation_id) is not None and not (
            self.store.conversation_exists(conversation_id)
        ):
            raise ConversationArchived(
                f"conversation {conversation_id} is archived; read-only (it can be read, "
                "not changed)"
            )

    def is_archived(self, conversation_id: str) -> bool:
        """Served from the archive: not in Redis, in the archive."""
        if self.archive is None or self.store.conversation_exists(conversation_id):
            return False
        return self.archived_conversation(conversation_id) is not None

    @cached_property
    def celery_app(self) -> Celery:
        from actionq.messaging.celery_app import create_celery_app

        return create_celery_app(self.settings)

    @cached_property
    def dispatch(self) -> Dispatch:
        return partial(send_action, self.celery_app, self.settings.queue)

    @cached_property
    def _task_messages(self) -> TaskMessages:
        from actionq.messaging.celery_app import RUN_ACTION_TASK

        return TaskMessages(
            self.celery_app, RUN_ACTION_TASK, self.settings.queue, self.settings.task_events
        )

    def _message(self, conversation_id: str, action_id: str) -> QueuedMessage | None:
        """Under direct enqueue, the action's Celery message, for the store to
        push when the action may run (or keep until its turn)."""
        if self.store.broker is None:
            return None
        argsrepr = action_argsrepr(conversation_id, action_id)
        return self._task_messages.build(conversation_id, action_id, argsrepr)

    def _send_if_needed(self, conversation_id: str, result: SubmitResult) -> None:
        """Send the message of the action the store made runnable, unless its
        own script already pushed it."""
        if result.dispatch_action_id and not result.pushed:
            self.dispatch(conversation_id, result.dispatch_action_id)

    def create_conversation(
        self, conversation_id: str | None = None, *, agent: AgentSpec | None = None
    ) -> Conversation:
        """A new conversation (or the existing one with this id). With ``agent``
        it has an agent: messages and ``run`` drive it (docs/agent.md)."""
        return self.create_conversation_checked(conversation_id, agent=agent)[0]

    def create_conversation_checked(
        self, conversation_id: str | None = None, *, agent: AgentSpec | None = None
    ) -> tuple[Conversation, bool]:
        """``create_conversation`` that also says whether it was created. An
        LLM agent's model profile must be known here (``ConfigurationError``),
        so a refused conversation stores nothing; so does one with the id of
        an archived conversation (``ConversationArchived``)."""
        if conversation_id is not None and self.archive is not None:
            self.refuse_if_archived(conversation_id)
        if agent is None:
            return self.store.create_conversation_checked(conversation_id)
        if agent.kind == "llm" and agent.model is None:
            from actionq.agent.profiles import resolve_profile

            resolve_profile(self.settings, agent.model_profile)
        cid = conversation_id or new_id()
        template = ""
        if self.store.broker is not None:
            from actionq.messaging.celery_app import AGENT_STEP_TASK

            template = step_message_template(
                self.celery_app,
                AGENT_STEP_TASK,
                self.settings.agent_queue,
                cid,
                step_argsrepr(cid),
            )
        return self.store.create_conversation_checked(
            cid,
            agent_spec_json=agent.model_dump_json(),
            max_iterations=agent.max_iterations or self.settings.agent_max_iterations,
            step_message_template=template,
        )

    @_read_only_if_archived
    def send_message(self, conversation_id: str, text: str, *, run: bool = False) -> Conversation:
        """A user message (``MessageEvent``). A finished or stuck conversation
        goes back to idle; with ``run`` it runs (unless it already does: the
        agent reads the message at its next step)."""
        event = MessageEvent(source="user", llm_message=LLMMessage(role="user", content=text))
        _, result = self.store.send_message(conversation_id, event, run=run)
        self._send_work(conversation_id, result)
        return self.store.get_conversation(conversation_id)

    @_read_only_if_archived
    def run(self, conversation_id: str) -> Conversation:
        """Run the conversation (OpenHands' ``run``) from idle, paused, error,
        stuck or waiting_for_confirmation (which accepts the held calls).
        Nothing that crashed runs again: an agent reads the crash as that
        call's result. ``InvalidTransition`` if it is running; a finished
        conversation is left as it is (send a message first)."""
        result = self.store.run_conversation(conversation_id)
        self._send_work(conversation_id, result)
        return self.store.get_conversation(conversation_id)

    @_read_only_if_archived
    def respond_to_confirmation(
        self, conversation_id: str, *, accept: bool, reason: str = "User rejected the action."
    ) -> Conversation:
        """Accept the calls waiting for confirmation (they run, once) or reject
        them (each gets a ``UserRejectObservation`` with ``reason``, which the
        agent reads on its next step; the conversation goes to idle)."""
        conversation = self.store.get_conversation(conversation_id)
        if conversation.status != ConversationStatus.WAITING_FOR_CONFIRMATION:
            raise InvalidTransition(
                f"conversation {conversation_id} is {conversation.status.value}; nothing "
                "waits for confirmation"
            )
        if accept:
            return self.run(conversation_id)
        self.store.reject_pending(conversation_id, reason)
        return self.store.get_conversation(conversation_id)

    @_read_only_if_archived
    def set_confirmation_policy(
        self, conversation_id: str, policy: NeverConfirm | AlwaysConfirm | ConfirmRisky
    ) -> Conversation:
        """The confirmation policy for the agent's next replies."""
        self.store.set_confirmation_policy(conversation_id, policy.model_dump_json())
        return self.store.get_conversation(conversation_id)

    def _send_work(self, conversation_id: str, result: RunResult) -> None:
        """Send what a transition made runnable, unless its script pushed it."""
        send_work(
            conversation_id, result, self.dispatch, step_sender(self.celery_app, self.settings)
        )

    def get_conversation(self, conversation_id: str) -> Conversation:
        """From Redis, else from the archive (as it was when archived)."""
        try:
            return self.store.get_conversation(conversation_id)
        except ConversationNotFound as e:
            return self._archived_or_raise(conversation_id, e).conversation

    @_read_only_if_archived
    def delete_conversation(self, conversation_id: str) -> None:
        """Delete the conversation and its history (``InvalidTransition``
        while it runs or waits for confirmation; an archived one is
        read-only: ``ConversationArchived``). An archived copy older than it
        (left by an archival it changed during) goes too, so that a deleted
        conversation is not served from the archive."""
        self.store.delete_conversation(conversation_id)
        if self.archive is not None:
            try:
                self.archive.remove(conversation_id)
            except ArchiveUnavailableError as e:
                log.warning("the archived copy of %s stays: %s", conversation_id, e)
            lock, cache = self._archived_cache
            with lock:
                cache.pop(conversation_id, None)

    def find_event(self, conversation_id: str, event_id: str) -> Event | None:
        """The event with this id (O(history)); archived ones too."""
        try:
            return self.store.find_event(conversation_id, event_id)
        except ConversationNotFound as e:
            return self._archived_or_raise(conversation_id, e).find_event(event_id)

    def get_conversation_live(self, conversation_id: str) -> Conversation:
        """The conversation, never ``running`` on a dead worker's claim: when it
        says running, claims of workers whose lease expired are settled first
        (what the sweeper does), so a reader never waits on work that is gone
        (OpenHands #4893), even when no sweeper runs."""
        conversation = self.get_conversation(conversation_id)
        if conversation.status != ConversationStatus.RUNNING:
            return conversation
        if self.store.expired_worker_ids():
            sweep_expired_leases(
                self.store,
                step_attempts=self.settings.agent_step_attempts,
                send_step=step_sender(self.celery_app, self.settings),
            )
            conversation = self.store.get_conversation(conversation_id)
        return conversation

    def agent_spec(self, conversation_id: str) -> tuple[AgentSpec, dict[str, Any] | None] | None:
        """The conversation's agent and the confirmation policy set since it
        was created (None: the spec's); None without an agent."""
        stored = self.store.agent_spec_json(conversation_id)
        if stored is None:
            archived = None
            if self.archive is not None and not self.store.conversation_exists(conversation_id):
                archived = self.archived_conversation(conversation_id)
            spec_json = archived.agent_spec_json() if archived is not None else None
            if archived is None or spec_json is None:
                return None
            return AgentSpec.model_validate_json(spec_json), archived.policy()
        spec_json, policy_json = stored
        policy = json.loads(policy_json) if policy_json else None
        return AgentSpec.model_validate_json(spec_json), policy

    def workspace_dir(self, conversation_id: str) -> str:
        """Where the conversation's tools run (the workers' ``ACTIONQ_WORKDIR``,
        as this process's settings have it)."""
        return str(self.settings.workspace_root / conversation_id)

    def list_conversations(self, offset: int = 0, limit: int = 100) -> list[Conversation]:
        conversations = []
        for cid in self.store.list_conversation_ids(offset, limit):
            try:
                conversations.append(self.store.get_conversation(cid))
            except ConversationNotFound:  # indexed a moment before it is written
                continue
        return conversations

    def submit_action(
        self,
        conversation_id: str,
        tool: str,
        arguments: dict[str, Any],
        *,
        tool_call_id: str | None = None,
        idempotency_key: str | None = None,
        thought: str = "",
    ) -> ActionRecord:
        """Record the tool call, then send it to a worker when its turn comes.

        With an ``idempotency_key`` already used in this conversation for the
        same call, the existing action is returned and nothing new runs (for
        another call: ``IdempotencyConflict``). An unknown tool or arguments
        its model refuses are stored and end with an ``AgentErrorEvent``, as
        an LLM's bad call should; ``submit(check_tool=True)`` refuses them.
        """
        return self.submit(
            conversation_id,
            tool,
            arguments,
            tool_call_id=tool_call_id,
            idempotency_key=idempotency_key,
            thought=thought,
        ).action

    @_read_only_if_archived
    def submit(
        self,
        conversation_id: str,
        tool: str,
        arguments: dict[str, Any],
        *,
        tool_call_id: str | None = None,
        idempotency_key: str | None = None,
        thought: str = "",
        check_tool: bool = False,
    ) -> Submitted:
        """``submit_action`` that also says whether the action was created
        (False: the idempotency key returned the existing one). The arguments
        are checked (size, depth) and serialized once; with ``check_tool``
        (the HTTP API) an unknown tool (``UnknownToolError``) or arguments
        its model refuses (``InvalidArgumentsError``) store nothing."""
        arguments_json = self._check_arguments(arguments)
        if check_tool:
            _check_tool_arguments(tool, arguments)
        action_id = new_id()
        result = self.store.submit_action(
            conversation_id,
            tool,
            arguments,
            action_id=action_id,
            tool_call_id=tool_call_id,
            idempotency_key=idempotency_key,
            thought=thought,
            arguments_json=arguments_json,
            message=self._message(conversation_id, action_id),
        )
        self._send_if_needed(conversation_id, result)
        if result.record is not None:
            return Submitted(result.record, True)  # as stored: no second read
        # The existing action: a client retrying after an error may have lost
        # the first send.
        resend_turn(self.store, conversation_id, self.dispatch, only=result.action_id)
        return Submitted(self.store.get_action(result.action_id, conversation_id), False)

    def _check_arguments(self, arguments: dict[str, Any]) -> str:
        """Refuse arguments too deep or too large to store and show safely;
        returns them as the canonical JSON the store keeps."""
        depth = _nesting_depth(arguments, self.settings.max_arguments_depth + 1)
        if depth > self.settings.max_arguments_depth:
            raise InvalidArgumentsError(
                f"arguments nested deeper than {self.settings.max_arguments_depth} levels "
                "(ACTIONQ_MAX_ARGUMENTS_DEPTH)"
            )
        as_json = canonical_json(arguments)
        size = len(as_json.encode())
        if size > self.settings.max_arguments_bytes:
            raise InvalidArgumentsError(
                f"arguments are {size} bytes as JSON, more than "
                f"{self.settings.max_arguments_bytes} (ACTIONQ_MAX_ARGUMENTS_BYTES)"
            )
        return as_json

    def count_conversations(self) -> int:
        return self.store.count_conversations()

    def all_events(self, conversation_id: str) -> list[Event]:
        """Every event of the conversation, in order (read in pages); archived ones too."""
        try:
            return self.store.all_events(conversation_id)
        except ConversationNotFound as e:
            return self._archived_or_raise(conversation_id, e).all_events()

    def health(self) -> tuple[bool, int]:
        """(the state store answers, number of workers holding a lease);
        (False, 0) when the store cannot be reached."""
        try:
            return self.store.ping(), len(self.store.live_worker_ids())
        except ActionqError:
            return False, 0

    def live_worker_count(self) -> int:
        return len(self.store.live_worker_ids())

    def event_follower(self) -> EventFollower:
        """A follower of conversations' event streams, for the live stream
        (asyncio; its own connection pool)."""
        return EventFollower(self.settings.redis_url, self.store.keys)

    def get_action(self, action_id: str) -> ActionRecord:
        """The action's record; of an archived conversation, its archived copy."""
        try:
            return self.store.get_action(action_id)
        except ActionNotFound:
            archived = self._archived_action(action_id)
            if archived is None:
                raise
            return archived

    def _archived_action(self, action_id: str) -> ActionRecord | None:
        """Asked only after Redis has no such action."""
        if self.archive is None:
            return None
        conversation_id = self.archive.find_action(action_id)
        if conversation_id is None or self.store.conversation_exists(conversation_id):
            return None
        archived = self.archived_conversation(conversation_id)
        return None if archived is None else archived.action(action_id)

    def list_events(self, conversation_id: str, after_seq: int = 0, limit: int = 100) -> EventPage:
        """Events with seq > after_seq, at most ``limit``; archived ones too."""
        try:
            return self.store.list_events(conversation_id, after_seq, limit)
        except ConversationNotFound as e:
            return self._archived_or_raise(conversation_id, e).list_events(after_seq, limit)

    @_read_only_if_archived
    def resume(self, conversation_id: str) -> Conversation:
        """error|paused -> running (the next queued action runs) or idle (none
        queued). Nothing that crashed is re-run; its error stays in history."""
        next_action = self.store.resume_conversation(conversation_id)
        if next_action:
            self.dispatch(conversation_id, next_action)
        return self.store.get_conversation(conversation_id)

    @_read_only_if_archived
    def pause(self, conversation_id: str) -> Conversation:
        """Pause between steps (OpenHands' ``pause``): nothing new starts (no
        next action, no next agent step) until ``run``; the action or model
        call in flight finishes and is recorded. ``interrupt`` stops it too."""
        self.store.pause_conversation(conversation_id)
        return self.store.get_conversation(conversation_id)

    @_read_only_if_archived
    def interrupt(self, conversation_id: str) -> Conversation:
        """Stop the conversation now. A running action is terminated
        (AgentErrorEvent cause ``cancelled``); one not started yet is rejected
        (UserRejectObservation); an agent step in flight is dropped (the model
        is asked again on the next run). Queued actions wait for ``run``."""
        active_id = self.store.pause_conversation(conversation_id, interrupt=True)
        if active_id is None:
            return self.store.get_conversation(conversation_id)
        # Not started: end it here; a message that still comes runs nothing.
        if cancel_action(
            self.store,
            conversation_id,
            active_id,
            "stopped before it started",
            only_if_pending=True,
        ):
            self.celery_app.control.revoke(active_id)
        elif self.store.get_action(active_id, conversation_id).state == ActionState.CLAIMED:
            # Running (or claimed meanwhile): the worker's main process kills
            # the child and its task_revoked handler records the cancellation.
            self.celery_app.control.revoke(active_id, terminate=True, signal="SIGKILL")
        return self.store.get_conversation(conversation_id)

    def retry_action(self, action_id: str, *, force: bool = False) -> ActionRecord:
        """Run an ended action's call again, as a **new** action (new id, same
        tool and arguments, ``retry_of`` = the original). A conversation in
        ``error`` is resumed so that the retry runs (a paused one stays paused).
        One atomic step: a refused retry stores nothing.

        Refused with ``QuarantinedAction`` once the same call (tool + canonical
        arguments) crashed ``quarantine_threshold`` times in this conversation,
        unless ``force``; with ``RetryInProgress`` while an earlier retry of the
        same call has not ended (so a retry storm makes one action); with
        ``InvalidTransition`` for an action that has not ended.
        """
        try:
            original = self.store.get_action(action_id)
        except ActionNotFound:
            archived = self._archived_action(action_id)
            if archived is None:
                raise
            raise ConversationArchived(
                f"action {action_id} belongs to conversation {archived.conversation_id}, which "
                "is archived; read-only (it can be read, not retried)"
            ) from None
        cid = original.conversation_id
        retry_id = new_id()
        result = self.store.retry_action(
            original,
            action_id=retry_id,
            quarantine_threshold=self.settings.quarantine_threshold,
            force=force,
            message=self._message(cid, retry_id),
        )
        self._send_if_needed(cid, result)
        return self.store.get_action(retry_id, cid) if result.record is None else result.record

    def wait_for_action(
        self, action_id: str, timeout: float = 60.0, poll: float = 0.05
    ) -> ActionRecord:
        """Poll until the action has ended (or raise ``TimeoutError``)."""
        deadline = time.monotonic() + timeout
        while True:
            action = self.get_action(action_id)
            if action.state not in (ActionState.PENDING, ActionState.CLAIMED):
                return action
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"action {action_id} still {action.state.value} after {timeout}s"
                )
            time.sleep(poll)


class Submitted(NamedTuple):
    action: ActionRecord
    created: bool  # False: the idempotency key returned an existing action


def _check_tool_arguments(tool: str, arguments: dict[str, Any]) -> None:
    """A registered tool (``UnknownToolError``) whose model accepts the
    arguments (``InvalidArgumentsError``)."""
    try:
        get_tool(tool).args_model.model_validate(arguments)
    except ValidationError as e:
        raise InvalidArgumentsError(
            f"invalid arguments for tool {tool!r}: {validation_error_text(e)}"
        ) from e


def _nesting_depth(value: Any, limit: int) -> int:
    """Depth of nested lists/dicts, counting stops at ``limit`` (no recursion)."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if not isinstance(item, dict | list):
            continue
        deepest = max(deepest, depth)
        if deepest >= limit:
            return deepest
        children = item.values() if isinstance(item, dict) else item
        stack.extend((child, depth + 1) for child in children)
    return deepest
