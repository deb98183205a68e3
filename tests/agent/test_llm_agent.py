"""The LLM agent (actionq.agent.llm) through real litellm and real HTTP against
the fake model (tests/fake_model.py): replies parsed, requests as given,
retries of rate limits and 5xx with back-off, errors classified, and the API
key never in an error or a log line. No network: the fake listens on 127.0.0.1."""

from __future__ import annotations

import copy
import json
import logging
import subprocess
import sys
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from actionq.agent import llm
from actionq.agent.base import AgentReply, ModelError, ToolCall
from actionq.agent.llm import MAX_BACKOFF_SECONDS, LLMAgent
from actionq.agent.profiles import ModelProfile
from actionq.local.processes import free_port
from actionq.settings import Settings, load_settings
from tests.fake_model import FakeModel
from tests.helpers import ROOT

KEY_ENV = "FAKE_MODEL_API_KEY"
TOOLS: list[dict[str, Any]] = [
    {
        "type": "function",
        "function": {
            "name": "terminal",
            "description": "Run a shell command.",
            "parameters": {
                "type": "object",
                "properties": {"command": {"type": "string"}},
                "required": ["command"],
            },
        },
    }
]


@pytest.fixture
def key(monkeypatch: pytest.MonkeyPatch) -> str:
    value = f"sk-test-{uuid.uuid4().hex}"
    monkeypatch.setenv(KEY_ENV, value)
    return value


@pytest.fixture
def fake(key: str) -> Iterator[FakeModel]:
    with FakeModel(api_key=key) as model:
        yield model


@pytest.fixture
def caplog_all(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """Every log record, debug included, of actionq and of the libraries the
    call goes through (their own loggers have levels of their own)."""
    caplog.set_level(logging.DEBUG)
    for name in ("LiteLLM", "LiteLLM Router", "openai", "httpx", "httpcore"):
        caplog.set_level(logging.DEBUG, logger=name)
    return caplog


def quick_settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "model_retries": 2,
        "model_retry_base_seconds": 0.001,
        "model_timeout": 10.0,
    }
    return load_settings(**(values | overrides))


def agent_for(base_url: str, **overrides: Any) -> LLMAgent:
    profile = ModelProfile(
        name="test", model="openai/fake-model", base_url=base_url, api_key_env=KEY_ENV
    )
    return LLMAgent(profile, quick_settings(**overrides))


def ask(
    agent: LLMAgent,
    messages: list[dict[str, Any]],
    tools: list[dict[str, Any]] | None = None,
    step: int = 1,
) -> AgentReply:
    """As an agent step calls it: in a thread-pool worker, not the main thread."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(agent.reply, messages, tools or [], step=step).result(timeout=60)


def ask_error(agent: LLMAgent, messages: list[dict[str, Any]]) -> ModelError:
    with pytest.raises(ModelError) as info:
        ask(agent, messages)
    return info.value


def user(text: str) -> list[dict[str, Any]]:
    return [{"role": "system", "content": "You are a test."}, {"role": "user", "content": text}]


def assert_no_key(key: str, error: ModelError, caplog: pytest.LogCaptureFixture) -> None:
    assert key not in str(error)
    assert key not in repr(error)
    assert key not in error.detail
    assert key not in error.code
    assert error.__cause__ is None and error.__context__ is None
    for record in caplog.records:
        assert key not in record.getMessage(), record.name
        assert key not in str(record.exc_info), record.name


def test_a_tool_call_reply_is_parsed(fake: FakeModel) -> None:
    fake.script(
        "list the files",
        [{"tool_calls": [{"id": "call_ls", "name": "terminal", "arguments": {"command": "ls"}}]}],
    )
    reply = ask(agent_for(fake.base_url), user("please list the files"), TOOLS)
    assert reply.tool_calls == [ToolCall("call_ls", "terminal", {"command": "ls"})]
    assert reply.text == ""
    assert reply.response_id.startswith("chatcmpl-fake-")  # the server's id


def test_a_text_reply(fake: FakeModel) -> None:
    fake.script("say hello", [{"content": "Hello!"}])
    reply = ask(agent_for(fake.base_url), user("say hello"), TOOLS)
    assert (reply.text, reply.tool_calls) == ("Hello!", [])


def test_text_and_parallel_tool_calls_keep_their_order(fake: FakeModel) -> None:
    calls = [{"name": "terminal", "arguments": {"command": f"echo {i}"}} for i in range(5)]
    fake.script("in parallel", [{"content": "Running five.", "tool_calls": calls}])
    reply = ask(agent_for(fake.base_url), user("run them in parallel"), TOOLS)
    assert reply.text == "Running five."
    assert [c.arguments["command"] for c in reply.tool_calls] == [f"echo {i}" for i in range(5)]
    assert [c.id for c in reply.tool_calls] == [f"call_0_{i}" for i in range(5)]


def test_malformed_arguments_are_kept_raw(fake: FakeModel) -> None:
    raws = ['{"command": "ls"', "[1, 2]", '"just a string"', ""]
    fake.script("malformed", [{"tool_calls": [{"name": "terminal", "arguments": r} for r in raws]}])
    reply = ask(agent_for(fake.base_url), user("malformed please"), TOOLS)
    assert [c.arguments for c in reply.tool_calls] == [
        {"_malformed_arguments": '{"command": "ls"'},
        {"_malformed_arguments": "[1, 2]"},
        {"_malformed_arguments": '"just a string"'},
        {},  # no arguments at all: an empty object
    ]


def test_a_call_without_an_id_gets_one(fake: FakeModel) -> None:
    fake.script(
        "no ids",
        [{"tool_calls": [{"name": "terminal", "arguments": {}, "id": None} for _ in range(2)]}],
    )
    reply = ask(agent_for(fake.base_url), user("no ids here"), TOOLS)
    ids = [c.id for c in reply.tool_calls]
    assert all(ids) and len(set(ids)) == 2


def test_the_request_carries_the_messages_and_tools_as_given(fake: FakeModel) -> None:
    messages: list[dict[str, Any]] = [
        *user("look around"),
        {
            "role": "assistant",
            "content": "Looking.",
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "terminal", "arguments": '{"command": "ls"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "a.txt\nb.txt"},
    ]
    given, given_tools = copy.deepcopy(messages), copy.deepcopy(TOOLS)
    fake.script("look around", [{"content": "first"}, {"content": "second"}])
    reply = ask(agent_for(fake.base_url), messages, TOOLS)
    assert reply.text == "second"  # one assistant message so far: replies[1]
    (body,) = fake.requests("look around")
    assert body["messages"] == given
    assert body["tools"] == given_tools
    assert body["model"] == "fake-model"
    assert not body.get("stream")
    assert (messages, TOOLS) == (given, given_tools)  # the caller's lists are untouched

    fake.script("no tools", [{"content": "ok"}])
    ask(agent_for(fake.base_url), user("no tools"), [])
    (body,) = fake.requests("no tools")
    assert "tools" not in body


def test_a_step_that_runs_again_gets_the_same_reply(fake: FakeModel) -> None:
    fake.script("twice", [{"tool_calls": [{"name": "terminal", "arguments": {"command": "ls"}}]}])
    agent = agent_for(fake.base_url)
    assert ask(agent, user("twice")) == ask(agent, user("twice"))


def test_rate_limited_twice_then_answered(fake: FakeModel, caplog_all: Any) -> None:
    fake.script("busy", [{"fail": [429, 429], "content": "at last"}])
    delays: list[float] = []
    profile = ModelProfile(
        name="test", model="openai/fake-model", base_url=fake.base_url, api_key_env=KEY_ENV
    )
    agent = LLMAgent(profile, quick_settings(model_retries=2), sleep=delays.append)
    reply = ask(agent, user("busy model"), step=7)
    assert reply.text == "at last"
    assert len(fake.requests("busy")) == 3
    base = 0.001
    assert base <= delays[0] <= base * 1.25 and 2 * base <= delays[1] <= 2 * base * 1.25
    retries = [r for r in caplog_all.records if r.name == "actionq.agent.llm"]
    assert [r.levelname for r in retries] == ["WARNING", "WARNING"]
    assert "step 7: RateLimitError" in retries[0].getMessage()


def test_a_server_error_for_ever_is_transient_after_all_retries(
    fake: FakeModel, key: str, caplog_all: Any
) -> None:
    fake.script("broken", [{"fail": [500] * 20}])
    error = ask_error(agent_for(fake.base_url, model_retries=3), user("broken server"))
    assert len(fake.requests("broken")) == 4  # model_retries + 1: no retries of litellm's
    assert (error.code, error.kind, error.retryable, error.user_action) == (
        "InternalServerError",
        "transient",
        True,
        "retry",
    )
    assert "gave up after 4 attempts" in error.detail
    assert_no_key(key, error, caplog_all)


def test_rate_limited_for_ever(fake: FakeModel, key: str, caplog_all: Any) -> None:
    fake.script("always busy", [{"fail": [429] * 20}])
    error = ask_error(agent_for(fake.base_url, model_retries=1), user("always busy"))
    assert len(fake.requests("always busy")) == 2
    assert (error.code, error.kind, error.retryable, error.user_action) == (
        "RateLimitError",
        "rate_limit",
        True,
        "retry",
    )
    assert_no_key(key, error, caplog_all)


def test_out_of_quota_is_not_retried(fake: FakeModel) -> None:
    quota = {"status": 429, "message": "You exceeded your current quota, check your plan."}
    fake.script("no money", [{"fail": [quota] * 5}])
    error = ask_error(agent_for(fake.base_url), user("no money"))
    assert len(fake.requests("no money")) == 1
    assert (error.kind, error.retryable, error.user_action) == ("quota", False, "settings")


def test_a_wrong_key_is_auth_and_not_retried(
    fake: FakeModel, monkeypatch: pytest.MonkeyPatch, caplog_all: Any
) -> None:
    wrong = f"sk-wrong-{uuid.uuid4().hex}"
    monkeypatch.setenv(KEY_ENV, wrong)
    fake.script("wrong key", [{"content": "never"}])
    error = ask_error(agent_for(fake.base_url), user("wrong key"))
    assert len(fake.requests("wrong key")) == 0  # refused before the script
    assert len(fake.all_requests()) == 0
    assert (error.code, error.kind, error.retryable, error.user_action) == (
        "AuthenticationError",
        "auth",
        False,
        "settings",
    )
    assert_no_key(wrong, error, caplog_all)


def test_a_scripted_401_is_not_retried(fake: FakeModel) -> None:
    fake.script("scripted 401", [{"fail": [401, 401, 401]}])
    error = ask_error(agent_for(fake.base_url), user("scripted 401"))
    assert len(fake.requests("scripted 401")) == 1
    assert (error.kind, error.user_action) == ("auth", "settings")


@pytest.mark.parametrize(("status", "code"), [(400, "BadRequestError"), (404, "NotFoundError")])
def test_a_bad_request_is_config_and_not_retried(fake: FakeModel, status: int, code: str) -> None:
    fake.script(f"status {status}", [{"fail": [status] * 3}])
    error = ask_error(agent_for(fake.base_url), user(f"status {status}"))
    assert len(fake.requests(f"status {status}")) == 1
    assert (error.code, error.kind, error.retryable, error.user_action) == (
        code,
        "config",
        False,
        "settings",
    )


def test_a_too_long_conversation_is_config(fake: FakeModel) -> None:
    too_long = {
        "status": 400,
        "message": "This model's maximum context length is 8192 tokens. However, your "
        "messages resulted in 9000 tokens.",
    }
    fake.script("too long", [{"fail": [too_long]}])
    error = ask_error(agent_for(fake.base_url), user("too long"))
    assert (error.code, error.kind, error.retryable) == (
        "ContextWindowExceededError",
        "config",
        False,
    )


def test_a_missing_key_variable_is_auth_and_names_it(
    fake: FakeModel, key: str, monkeypatch: pytest.MonkeyPatch, caplog_all: Any
) -> None:
    monkeypatch.delenv(KEY_ENV)
    error = ask_error(agent_for(fake.base_url), user("no key"))
    assert fake.all_requests() == []
    assert (error.code, error.kind, error.retryable, error.user_action) == (
        "APIKeyMissing",
        "auth",
        False,
        "settings",
    )
    assert KEY_ENV in error.detail and "'test'" in error.detail
    monkeypatch.setenv(KEY_ENV, "")
    assert ask_error(agent_for(fake.base_url), user("no key")).code == "APIKeyMissing"
    assert_no_key(key, error, caplog_all)


def test_a_timeout_is_transient(fake: FakeModel) -> None:
    fake.script("slow", [{"delay": 2.0, "content": "too late"}])
    error = ask_error(agent_for(fake.base_url, model_timeout=0.3, model_retries=1), user("slow"))
    assert len(fake.requests("slow")) == 2
    assert (error.code, error.kind, error.retryable) == ("Timeout", "transient", True)


def test_no_server_is_transient_with_capped_back_off(key: str) -> None:
    delays: list[float] = []
    profile = ModelProfile(
        name="test",
        model="openai/fake-model",
        base_url=f"http://127.0.0.1:{free_port()}/v1",
        api_key_env=KEY_ENV,
    )
    settings = quick_settings(model_retries=3, model_retry_base_seconds=40.0)
    error = ask_error(LLMAgent(profile, settings, sleep=delays.append), user("anyone?"))
    # litellm calls a refused connection an InternalServerError ("Connection error.").
    assert (error.kind, error.retryable, error.user_action) == ("transient", True, "retry")
    assert "Connection error" in error.detail
    assert 40.0 <= delays[0] <= 50.0
    assert delays[1:] == [MAX_BACKOFF_SECONDS, MAX_BACKOFF_SECONDS]


def test_no_litellm_is_a_config_error(fake: FakeModel, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(llm, "_litellm_module", None)
    monkeypatch.setitem(sys.modules, "litellm", None)  # `import litellm` raises ImportError
    error = ask_error(agent_for(fake.base_url), user("no litellm"))
    assert (error.code, error.kind, error.retryable, error.user_action) == (
        "LiteLLMMissing",
        "config",
        False,
        "settings",
    )
    assert "actionq[llm]" in error.detail
    assert fake.all_requests() == []


def test_importing_actionq_does_not_import_litellm() -> None:
    code = (
        "import sys, actionq, actionq.agent.llm, actionq.agent.profiles, actionq.service, "
        "actionq.tasks.execution; assert 'litellm' not in sys.modules, 'litellm imported'"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr


def test_the_fake_model_runs_as_a_process(tmp_path: Path, key: str) -> None:
    """``python -m tests.fake_model`` (benchmarks run it apart from the test process)."""
    script = tmp_path / "script.json"
    script.write_text(json.dumps({"from a file": [{"content": "served by a process"}]}))
    with subprocess.Popen(
        [sys.executable, "-m", "tests.fake_model", "--port", "0", "--script", str(script)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    ) as process:
        try:
            assert process.stdout is not None
            base_url = process.stdout.readline().strip()
            assert base_url.startswith("http://127.0.0.1:") and base_url.endswith("/v1")
            reply = ask(agent_for(base_url), user("a script from a file"))
            assert reply.text == "served by a process"
        finally:
            process.terminate()
        assert process.wait(timeout=10) == 0
