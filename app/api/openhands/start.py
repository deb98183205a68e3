"""The body of ``POST /api/conversations``: OpenHands' ``StartConversationRequest``.

``agent`` is either OpenHands' ``Agent`` (``kind: "Agent"``: its ``llm`` and
its ``tools`` by name, as ``RemoteConversation`` sends it, API key included)
or actionq's own spec (``kind: "llm"`` with a model profile, or
``"scripted"``). The LLM key is sealed here with the server's secret key and
never stored, logged or shown in the clear.

The SDK sends many fields for features of its own server (plugins, hooks,
observability, sub-agent definitions). Fields actionq does not know are
ignored, as OpenHands' server ignores unknown fields; a feature it does not
have that the request actually uses (client tools, MCP servers, secrets for
tools, plugins, hooks) is refused with a clear error, so nothing is half-run.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from actionq.agent.spec import AgentSpec, ConfirmationPolicy, InlineModel
from actionq.api.openhands.info import SECRET_MASK
from actionq.api.schemas import InitialMessage
from actionq.errors import BadRequestError, UnknownToolError
from actionq.models import CONVERSATION_ID_MAX_LENGTH, CONVERSATION_ID_PATTERN
from actionq.secrets import SecretBox
from actionq.tools import get_tool

__all__ = ["OpenHandsAgent", "StartConversationRequest", "agent_spec_of"]

# OpenHands' default tools, by the names of their tool classes.
_DEFAULT_TOOLS = {"FinishTool": "finish", "ThinkTool": "think"}
# The SecretStr fields of OpenHands' LLM: sealed (api_key) or refused.
_LLM_SECRET_FIELDS = ("aws_access_key_id", "aws_secret_access_key", "aws_session_token")


class _Lenient(BaseModel):
    # The SDK's bodies carry fields for features of its own server; see the
    # module's docstring for which are refused when used.
    model_config = ConfigDict(extra="ignore")


class _Kept(BaseModel):
    # Kept whole, to show the agent back as the client sent it.
    model_config = ConfigDict(extra="allow")


class OpenHandsLLM(_Kept):
    model: str = Field(min_length=1, max_length=500)
    base_url: str | None = Field(None, max_length=2000)
    api_key: SecretStr | None = None
    temperature: float | None = None
    max_output_tokens: int | None = Field(None, gt=0)


class OpenHandsToolSpec(_Kept):
    name: str = Field(min_length=1, max_length=128)
    params: dict[str, Any] = Field(default_factory=dict)


class OpenHandsAgent(_Kept):
    kind: Literal["Agent"]
    llm: OpenHandsLLM
    tools: list[OpenHandsToolSpec] = Field(default_factory=list, max_length=100)
    include_default_tools: list[str] = Field(default_factory=lambda: list(_DEFAULT_TOOLS))
    system_prompt: str | None = Field(None, max_length=100_000)
    mcp_config: dict[str, Any] = Field(default_factory=dict)


class StartConversationRequest(_Lenient):
    conversation_id: str | None = Field(
        None,
        min_length=1,
        max_length=CONVERSATION_ID_MAX_LENGTH,
        # Alphanumeric first and no '/': see actionq.models.
        pattern=CONVERSATION_ID_PATTERN,
        description="Optional id (OpenHands clients send a UUID): letters, digits, '_', "
        "'.', '-', starting with a letter or digit. Creating an existing id returns it "
        "unchanged (200).",
    )
    agent: Annotated[OpenHandsAgent | AgentSpec, Field(discriminator="kind")] | None = Field(
        None,
        description="OpenHands' Agent (kind Agent: its llm and tools by name), or actionq's "
        "own: a model profile the server knows (kind llm) or a script (kind scripted). "
        "Without it the conversation only runs the tool calls posted to it.",
    )
    confirmation_policy: ConfirmationPolicy | None = None
    initial_message: InitialMessage | None = Field(
        None, description="Sent after the conversation is created (not when it existed)."
    )
    max_iterations: int | None = Field(None, gt=0, le=100_000)
    stuck_detection: bool = True
    # Features actionq does not have: refused when used (see _refuse_unsupported).
    secrets: dict[str, Any] | None = None
    client_tools: list[Any] | None = None
    plugins: list[Any] | None = None
    hook_config: dict[str, Any] | None = None


def _refuse_unsupported(body: StartConversationRequest) -> None:
    used = [
        name
        for name, value in (
            ("secrets", body.secrets),
            ("client_tools", body.client_tools),
            ("plugins", body.plugins),
            ("hook_config", body.hook_config),
        )
        if value
    ]
    if isinstance(body.agent, OpenHandsAgent) and body.agent.mcp_config:
        used.append("agent.mcp_config")
    if used:
        raise BadRequestError(
            f"actionq does not support {', '.join(used)}; send the request without "
            f"{'it' if len(used) == 1 else 'them'} (docs/openhands.md lists what is supported)"
        )


def _tool_names(agent: OpenHandsAgent) -> list[str]:
    names = [tool.name for tool in agent.tools]
    for default in agent.include_default_tools:
        if default not in _DEFAULT_TOOLS:
            raise BadRequestError(
                f"agent.include_default_tools: unknown tool {default!r}; actionq has "
                f"{', '.join(_DEFAULT_TOOLS)}"
            )
        names.append(_DEFAULT_TOOLS[default])
    for name in names:
        try:
            get_tool(name)
        except UnknownToolError as e:
            raise BadRequestError(f"agent.tools: {e}") from None
    return list(dict.fromkeys(names))


def _shown_agent(agent: OpenHandsAgent) -> dict[str, Any]:
    """The client's agent as it sent it, its key masked (a SecretStr dumps as
    the mask), to show it back."""
    shown = agent.model_dump(mode="json")
    assert all(shown["llm"].get(name) is None for name in _LLM_SECRET_FIELDS)
    if shown["llm"].get("api_key"):
        shown["llm"]["api_key"] = SECRET_MASK
    return shown


def agent_spec_of(body: StartConversationRequest, box: SecretBox | None) -> AgentSpec | None:
    """The stored spec of the request's agent (``BadRequestError`` when it
    cannot be run here; nothing is stored then)."""
    _refuse_unsupported(body)
    agent = body.agent
    if agent is None:
        return None
    updates: dict[str, Any] = {}
    if body.confirmation_policy is not None:
        updates["confirmation_policy"] = body.confirmation_policy
    if body.max_iterations is not None:
        updates["max_iterations"] = body.max_iterations
    if isinstance(agent, AgentSpec):
        updates["stuck_detection"] = body.stuck_detection
        return agent.model_copy(update=updates)
    llm = agent.llm
    extra = llm.model_extra or {}
    secrets = [name for name in _LLM_SECRET_FIELDS if extra.get(name)]
    if secrets:
        raise BadRequestError(
            f"agent.llm: {', '.join(secrets)} are not supported; give the model's key as api_key"
        )
    sealed = None
    key = llm.api_key.get_secret_value() if llm.api_key is not None else ""
    if key:
        if box is None:
            raise BadRequestError(
                "agent.llm.api_key: this server has no secret key to store it with "
                "(ACTIONQ_SECRET_KEY_FILE; `actionq up` makes one); nothing was stored"
            )
        sealed = box.seal(key)
    return AgentSpec(
        kind="llm",
        model=InlineModel(
            model=llm.model,
            base_url=llm.base_url,
            api_key_sealed=sealed,
            temperature=llm.temperature,
            max_output_tokens=llm.max_output_tokens,
        ),
        tools=_tool_names(agent),
        client_agent=_shown_agent(agent),
        system_prompt=agent.system_prompt,
        stuck_detection=body.stuck_detection,
        **updates,
    )
