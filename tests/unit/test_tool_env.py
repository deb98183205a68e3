"""The environment a ``terminal`` command gets (actionq.tools.sandbox, and
actionq.tasks.execution.tool_env): an allow-list, never ``ACTIONQ_*``, no
secret-looking name by pattern, never a model API key variable."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from actionq.settings import Settings
from actionq.tasks.execution import tool_env
from actionq.tools.sandbox import BASE_ENV_NAMES, tool_environment


def test_tool_environment_allow_list() -> None:
    environ = {
        "PATH": "/bin",
        "LC_ALL": "C",
        "LC_TOKEN": "x",  # matched by LC_* only: looks like a secret, dropped
        "ACTIONQ_REDIS_URL": "redis://:pw@h/0",
        "OPENAI_API_KEY": "sk-1",
        "AWS_REGION": "eu",
        "AWS_SECRET_ACCESS_KEY": "s",
        "GITHUB_TOKEN": "t",
        "HOSTNAME": "h",
    }
    assert tool_environment(environ) == {"PATH": "/bin", "LC_ALL": "C"}
    # A pattern passes what does not look secret; a name passes as listed.
    assert tool_environment(environ, ["AWS_*", "GITHUB_TOKEN", "ACTIONQ_REDIS_URL"]) == {
        "PATH": "/bin",
        "LC_ALL": "C",
        "AWS_REGION": "eu",
        "GITHUB_TOKEN": "t",
    }


def test_allowing_an_actionq_variable_is_a_configuration_error() -> None:
    with pytest.raises(ValueError, match="may not pass actionq's own settings"):
        Settings(tool_env_allow=["ACTIONQ_REDIS_URL"])  # type: ignore[arg-type]


def test_every_base_name_passes_and_nothing_else() -> None:
    exact = [name for name in BASE_ENV_NAMES if "*" not in name]
    environ = {name: f"v-{name}" for name in exact} | {"LC_CTYPE": "C.UTF-8", "EDITOR": "vi"}
    assert tool_environment(environ) == {name: f"v-{name}" for name in exact} | {
        "LC_CTYPE": "C.UTF-8"
    }
    assert "EDITOR" in environ  # the caller's mapping is left as it was


def test_own_settings_never_pass_whatever_their_case() -> None:
    environ = {"ACTIONQ_API_KEYS": "k", "actionq_redis_url": "redis://:pw@h/0", "PATH": "/bin"}
    allow = ["ACTIONQ_API_KEYS", "actionq_redis_url", "ACTIONQ_*", "actionq_*", "*"]
    assert tool_environment(environ, allow) == {"PATH": "/bin"}


def test_secret_looking_names_are_dropped_by_pattern_in_any_case() -> None:
    environ = {
        "MY_api_key": "1",
        "MY_Password": "2",
        "MY_PASSWD": "3",
        "MY_CREDENTIALS": "4",
        "MY_SECRET_X": "5",
        "MY_TOKEN": "6",
        "MY_REGION": "eu",
    }
    assert tool_environment(environ, ["MY_*"]) == {"MY_REGION": "eu"}
    # Listed by name, each passes: the user said so explicitly.
    assert tool_environment(environ, list(environ)) == environ


@pytest.mark.parametrize(
    ("allow", "passed"),
    [
        (["BUILD_?"], {"BUILD_A", "BUILD_B"}),
        (["BUILD_[A]"], {"BUILD_A"}),
        (["BUILD_*"], {"BUILD_A", "BUILD_B", "BUILD_LONG"}),
        (["build_*"], set()),  # names are matched case-sensitively, as the shell has them
        (["BUILD_A", "BUILD_A"], {"BUILD_A"}),
    ],
)
def test_patterns_are_shell_style(allow: list[str], passed: set[str]) -> None:
    environ = {"BUILD_A": "a", "BUILD_B": "b", "BUILD_LONG": "l", "OTHER": "o"}
    assert set(tool_environment(environ, allow)) == passed


def test_model_key_variables_never_reach_tools(tmp_path: Path) -> None:
    """actionq.tasks.execution.tool_env: a model API key variable is dropped even
    when ACTIONQ_TOOL_ENV_ALLOW or the tool's own ``env`` lists it by name."""
    profiles = tmp_path / "profiles.json"
    profiles.write_text(json.dumps({"local": {"model": "m", "api_key_env": "LOCAL_MODEL_KEY"}}))
    environ = {
        "PATH": "/bin",
        "OPENAI_API_KEY": "sk-1",
        "LOCAL_MODEL_KEY": "sk-2",
        "MY_MODEL_KEY": "sk-3",
        "GITHUB_TOKEN": "t",
        "AWS_REGION": "eu",
    }
    settings = Settings(
        tool_env_allow=["OPENAI_API_KEY", "LOCAL_MODEL_KEY", "GITHUB_TOKEN", "AWS_*"],  # type: ignore[arg-type]
        model="openai/gpt-4o",
        model_api_key_env="MY_MODEL_KEY",
        model_profiles_file=str(profiles),
    )
    # OPENAI_API_KEY is not a model key here (no profile names it): listed, it passes.
    expected = {"PATH": "/bin", "OPENAI_API_KEY": "sk-1", "GITHUB_TOKEN": "t", "AWS_REGION": "eu"}
    assert tool_env(settings, ["MY_MODEL_KEY"], environ) == expected
    # The default key variable is dropped even with no model configured.
    bare = Settings(tool_env_allow=["OPENAI_API_KEY", "GITHUB_TOKEN"])  # type: ignore[arg-type]
    assert tool_env(bare, (), environ) == {"PATH": "/bin", "GITHUB_TOKEN": "t"}


def test_unreadable_profiles_pass_only_the_base_environment(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    environ = {"PATH": "/bin", "GITHUB_TOKEN": "t", "SOME_KEY": "k"}
    settings = Settings(
        tool_env_allow=["GITHUB_TOKEN", "SOME_KEY"],  # type: ignore[arg-type]
        model_profiles_file=str(tmp_path / "missing.json"),
    )
    assert tool_env(settings, ["SOME_KEY"], environ) == {"PATH": "/bin"}
    assert "tools get only the base environment" in caplog.text
