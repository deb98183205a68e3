"""Model profiles (actionq.agent.profiles): the ``default`` one from ACTIONQ_MODEL,
the others from ACTIONQ_MODEL_PROFILES_FILE; a bad file is one clear line; a
profile names the variable of its key, never holds a key."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from actionq.agent.profiles import (
    ModelProfile,
    load_profiles,
    model_key_env_names,
    resolve_profile,
)
from actionq.errors import ConfigurationError
from actionq.settings import Settings, load_settings


def settings_with(tmp_path: Path, profiles: Any = None, **overrides: Any) -> Settings:
    if profiles is not None:
        path = tmp_path / "profiles.json"
        path.write_text(profiles if isinstance(profiles, str) else json.dumps(profiles))
        overrides["model_profiles_file"] = str(path)
    return load_settings(**overrides)


def config_error(settings: Settings) -> str:
    with pytest.raises(ConfigurationError) as info:
        load_profiles(settings)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_no_model_no_profiles(tmp_path: Path) -> None:
    settings = settings_with(tmp_path)
    assert load_profiles(settings) == {}
    with pytest.raises(ConfigurationError, match="no model is configured"):
        resolve_profile(settings, "default")


def test_the_default_profile_comes_from_the_settings(tmp_path: Path) -> None:
    settings = settings_with(
        tmp_path, model="openai/gpt-4o-mini", model_base_url="http://127.0.0.1:9/v1"
    )
    expected = ModelProfile(
        name="default",
        model="openai/gpt-4o-mini",
        base_url="http://127.0.0.1:9/v1",
        api_key_env="OPENAI_API_KEY",
    )
    assert load_profiles(settings) == {"default": expected}
    assert resolve_profile(settings, "default") == expected
    assert resolve_profile(settings) == expected


def test_profiles_from_the_file(tmp_path: Path) -> None:
    settings = settings_with(
        tmp_path,
        {
            "fast": {"model": "openai/gpt-4o-mini", "api_key_env": "OPENAI_API_KEY"},
            "local": {
                "model": "openai/qwen",
                "base_url": "http://127.0.0.1:8080/v1",
                "api_key_env": "LOCAL_KEY",
            },
            "keyless": {"model": "ollama/llama3"},
        },
        model="openai/gpt-4o",
        model_api_key_env="MAIN_KEY",
    )
    profiles = load_profiles(settings)
    assert sorted(profiles) == ["default", "fast", "keyless", "local"]
    assert profiles["local"] == ModelProfile(
        name="local",
        model="openai/qwen",
        base_url="http://127.0.0.1:8080/v1",
        api_key_env="LOCAL_KEY",
    )
    assert profiles["keyless"].api_key_env is None
    assert resolve_profile(settings, "fast").model == "openai/gpt-4o-mini"
    assert model_key_env_names(settings) == frozenset({"MAIN_KEY", "OPENAI_API_KEY", "LOCAL_KEY"})


def test_an_unknown_profile_lists_the_known_ones(tmp_path: Path) -> None:
    settings = settings_with(tmp_path, {"b": {"model": "m"}, "a": {"model": "m"}}, model="x/y")
    with pytest.raises(ConfigurationError) as info:
        resolve_profile(settings, "nope")
    assert str(info.value) == "no model profile 'nope'; known: a, b, default"
    only_file = settings_with(tmp_path, {"a": {"model": "m"}})
    with pytest.raises(
        ConfigurationError, match=r"'default' \(set ACTIONQ_MODEL for it\); known: a"
    ):
        resolve_profile(only_file)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("{not json", "not valid JSON (line 1, column 2)"),
        ("[1, 2]", "expected a JSON object"),
        ('{"a": "openai/gpt-4o"}', "profile 'a' is not a JSON object"),
        ('{"a": {}}', "profile 'a': model: Field required"),
        ('{"a": {"model": ""}}', "profile 'a': model: String should have at least 1 character"),
        ('{"a": {"model": "m", "temperature": 0}}', "profile 'a': temperature: Extra inputs"),
        ('{"bad name!": {"model": "m"}}', "profile 'bad name!': name: a profile name is"),
        ('{"a": {"model": "m", "base_url": 5}}', "profile 'a': base_url: Input should be a valid"),
    ],
)
def test_a_bad_file_is_one_clear_line(tmp_path: Path, content: str, expected: str) -> None:
    message = config_error(settings_with(tmp_path, content))
    assert message.startswith(f"ACTIONQ_MODEL_PROFILES_FILE='{tmp_path / 'profiles.json'}': ")
    assert expected in message


def test_a_missing_file(tmp_path: Path) -> None:
    message = config_error(load_settings(model_profiles_file=str(tmp_path / "nowhere.json")))
    assert "nowhere.json" in message and "cannot read it" in message


def test_a_key_in_the_file_is_refused_without_being_repeated(tmp_path: Path) -> None:
    secret = "sk-live-0123456789abcdef"
    message = config_error(settings_with(tmp_path, {"a": {"model": "m", "api_key": secret}}))
    assert "keys do not go in the profiles file" in message
    # A key pasted where the variable's name goes.
    message = config_error(settings_with(tmp_path, {"a": {"model": "m", "api_key_env": secret}}))
    assert "NAME of an environment variable" in message
    with pytest.raises(ConfigurationError) as info:
        load_profiles(settings_with(tmp_path, model="m", model_api_key_env=secret))
    for text in (message, str(info.value)):
        assert secret not in text
    assert str(info.value).startswith("ACTIONQ_MODEL_API_KEY_ENV: ")


def test_default_in_both_places_is_refused(tmp_path: Path) -> None:
    message = config_error(settings_with(tmp_path, {"default": {"model": "m"}}, model="x"))
    assert "defined both by ACTIONQ_MODEL and in ACTIONQ_MODEL_PROFILES_FILE" in message
    # Only in the file is fine.
    assert (
        load_profiles(settings_with(tmp_path, {"default": {"model": "m"}}))["default"].model == "m"
    )


def test_an_edited_file_is_read_again(tmp_path: Path) -> None:
    settings = settings_with(tmp_path, {"a": {"model": "one"}})
    assert resolve_profile(settings, "a").model == "one"
    path = Path(str(settings.model_profiles_file))
    path.write_text(json.dumps({"a": {"model": "two", "api_key_env": "NEW_KEY"}}))
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert resolve_profile(settings, "a").model == "two"
    assert "NEW_KEY" in model_key_env_names(settings)


def test_key_names_without_any_model(tmp_path: Path) -> None:
    # The variable the default profile would read is a key name even when unset.
    assert model_key_env_names(settings_with(tmp_path)) == frozenset({"OPENAI_API_KEY"})
    assert model_key_env_names(
        settings_with(tmp_path, model_api_key_env="ANTHROPIC_API_KEY")
    ) == frozenset({"ANTHROPIC_API_KEY"})
