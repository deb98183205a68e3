"""What a conversation's agent is, as stored with the conversation: which
agent (a model profile, or a script), its limits and its confirmation policy.
Never a credential: an LLM agent names a model profile, whose key stays in
the agent worker's environment (``actionq.agent.profiles``)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, model_validator

__all__ = [
    "RISK_ORDER",
    "AgentSpec",
    "AlwaysConfirm",
    "ConfirmRisky",
    "ConfirmationPolicy",
    "InlineModel",
    "NeverConfirm",
    "ScriptedCall",
    "ScriptedTurn",
    "needs_confirmation",
    "policy_adapter",
]

# OpenHands' SecurityRisk, lowest first; UNKNOWN is a tool that declared none.
RISK_ORDER = ("LOW", "MEDIUM", "HIGH")


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid")


class NeverConfirm(_Spec):
    kind: Literal["NeverConfirm"] = "NeverConfirm"


class AlwaysConfirm(_Spec):
    kind: Literal["AlwaysConfirm"] = "AlwaysConfirm"


class ConfirmRisky(_Spec):
    """Confirm calls whose tool's risk is at least ``threshold`` (and, with
    ``confirm_unknown``, calls of tools that declare no risk)."""

    kind: Literal["ConfirmRisky"] = "ConfirmRisky"
    threshold: Literal["LOW", "MEDIUM", "HIGH"] = "HIGH"
    confirm_unknown: bool = True


ConfirmationPolicy = Annotated[
    NeverConfirm | AlwaysConfirm | ConfirmRisky, Field(discriminator="kind")
]


policy_adapter: TypeAdapter[NeverConfirm | AlwaysConfirm | ConfirmRisky] = TypeAdapter(
    ConfirmationPolicy
)


def needs_confirmation(policy: NeverConfirm | AlwaysConfirm | ConfirmRisky, risk: str) -> bool:
    """Whether a call of a tool with ``risk`` waits for the user under ``policy``."""
    if isinstance(policy, NeverConfirm):
        return False
    if isinstance(policy, AlwaysConfirm):
        return True
    if risk not in RISK_ORDER:
        return policy.confirm_unknown
    return RISK_ORDER.index(risk) >= RISK_ORDER.index(policy.threshold)


class ScriptedCall(_Spec):
    tool: str = Field(min_length=1)
    arguments: dict[str, Any] = Field(default_factory=dict)


class ScriptedTurn(_Spec):
    """One reply of a scripted agent: tool calls, a text answer, or both.
    ``{last_result}`` in ``text`` is replaced by the result the agent saw for
    the previous turn's last call (what a model would have read)."""

    text: str = ""
    tool_calls: list[ScriptedCall] = Field(default_factory=list)


class InlineModel(_Spec):
    """A model given with the conversation (OpenHands' ``agent.llm``) rather
    than by a profile name: its API key is stored sealed with the server's
    secret key (``actionq.secrets``), opened only in agent workers."""

    model: str = Field(min_length=1, max_length=500)
    base_url: str | None = Field(None, max_length=2000)
    api_key_sealed: str | None = None
    temperature: float | None = None
    max_output_tokens: int | None = Field(None, gt=0)


class AgentSpec(_Spec):
    """A conversation's agent. ``kind="llm"`` calls a model through litellm
    (``model_profile``: a profile name the server knows, or ``model``: one
    given with the conversation); ``kind="scripted"`` plays ``turns`` in order
    (demos, tests, benchmarks). ``tools``: the tools it may call (None: every
    registered tool). ``client_agent``: the agent as an OpenHands client sent
    it, secrets removed, shown back in the conversation's info."""

    kind: Literal["llm", "scripted"]
    model_profile: str = "default"
    model: InlineModel | None = None
    tools: list[str] | None = None
    client_agent: dict[str, Any] | None = None
    stuck_detection: bool = True
    turns: list[ScriptedTurn] = Field(default_factory=list, max_length=10_000)
    system_prompt: str | None = Field(None, max_length=100_000)
    max_iterations: int | None = Field(None, gt=0, le=100_000)
    confirmation_policy: ConfirmationPolicy = Field(default_factory=NeverConfirm)

    @model_validator(mode="after")
    def _scripted_has_turns(self) -> AgentSpec:
        if self.kind == "scripted" and not self.turns:
            raise ValueError("a scripted agent needs at least one turn")
        return self
