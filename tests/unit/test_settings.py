"""Settings validation (actionq.settings.load_settings): an unknown name is an
error with a suggestion, a bad value is one line naming the variable, checks
across settings hold, and list settings are comma-separated. The environment
is the test's own: every ACTIONQ_* variable of the run is removed first."""

from __future__ import annotations

import os

import pytest

from actionq.errors import ConfigurationError
from actionq.settings import load_settings


@pytest.fixture(autouse=True)
def no_actionq_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in os.environ if n.startswith("ACTIONQ_")]:
        monkeypatch.delenv(name)


def refusal(monkeypatch: pytest.MonkeyPatch, **env: str) -> str:
    """The one-line message load_settings refuses ``env`` with."""
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigurationError) as refused:
        load_settings()
    message = str(refused.value)
    assert "\n" not in message, message
    assert "errors.pydantic.dev" not in message and "http" not in message, message
    return message


def test_mistyped_setting_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ACTIONQ_VISIBILTY_TIMEOUT", "5")
    with pytest.raises(ConfigurationError, match="ACTIONQ_VISIBILTY_TIMEOUT"):
        load_settings()


def test_invalid_setting_value_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ACTIONQ_HEARTBEAT_INTERVAL", "10")
    monkeypatch.setenv("ACTIONQ_WORKER_LEASE_SECONDS", "3")
    with pytest.raises(ConfigurationError, match="HEARTBEAT_INTERVAL must be shorter"):
        load_settings()


def test_comma_separated_lists(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ACTIONQ_API_KEYS", "a, b,,c")
    assert load_settings().api_keys == ["a", "b", "c"]


# --- unknown names ---------------------------------------------------------------


def test_an_unknown_name_suggests_the_closest_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    message = refusal(monkeypatch, ACTIONQ_REDIS_ULR="redis://x")
    assert message == (
        "unknown setting ACTIONQ_REDIS_ULR (did you mean ACTIONQ_REDIS_URL?); "
        "`actionq config --markdown` lists them all"
    )


def test_every_unknown_name_is_listed_and_nothing_far_is_suggested(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    message = refusal(monkeypatch, ACTIONQ_QUEUEE="q", ACTIONQ_ZZZZZZZZ="1")
    # Sorted; the shared prefix alone never makes a name look close.
    assert message.startswith(
        "unknown settings ACTIONQ_QUEUEE (did you mean ACTIONQ_QUEUE?), ACTIONQ_ZZZZZZZZ; "
    ), message


def test_an_unknown_name_is_refused_even_with_an_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ACTIONQ_WORKDIRR", "/tmp")
    with pytest.raises(ConfigurationError, match="ACTIONQ_WORKDIRR"):
        load_settings(workdir="/tmp")


# --- bad values --------------------------------------------------------------------


def test_bad_values_are_one_line_naming_each_variable_and_value(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    message = refusal(monkeypatch, ACTIONQ_API_PORT="abc", ACTIONQ_EMBEDDED_APPENDFSYNC="never")
    assert message.startswith("invalid setting: "), message
    port, fsync = message.removeprefix("invalid setting: ").split("; ")
    assert port.startswith("ACTIONQ_API_PORT='abc': ") and "valid integer" in port
    assert fsync.startswith("ACTIONQ_EMBEDDED_APPENDFSYNC='never': ") and "'everysec'" in fsync


def test_a_value_out_of_range_says_the_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    message = refusal(monkeypatch, ACTIONQ_API_PORT="70000")
    assert message.startswith("invalid setting: ACTIONQ_API_PORT='70000': "), message
    assert "65535" in message


def test_a_secret_setting_is_named_but_its_value_never_shown() -> None:
    secret = 8_675_309  # not a string: refused, and not echoed back
    with pytest.raises(ConfigurationError) as refused:
        load_settings(redis_url=secret)
    message = str(refused.value)
    assert message.startswith("invalid setting: ACTIONQ_REDIS_URL: "), message
    assert str(secret) not in message


# --- checks across settings ----------------------------------------------------------


@pytest.mark.parametrize("heartbeat", ["3", "3.0", "4"])
def test_a_heartbeat_not_shorter_than_the_lease_is_refused(
    monkeypatch: pytest.MonkeyPatch, heartbeat: str
) -> None:
    message = refusal(
        monkeypatch, ACTIONQ_HEARTBEAT_INTERVAL=heartbeat, ACTIONQ_WORKER_LEASE_SECONDS="3"
    )
    # A check across settings names them itself: no one variable='value' prefix.
    assert message == (
        "invalid setting: ACTIONQ_HEARTBEAT_INTERVAL must be shorter than "
        "ACTIONQ_WORKER_LEASE_SECONDS, or live workers would look dead"
    )


def test_a_heartbeat_just_shorter_than_the_lease_is_accepted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ACTIONQ_HEARTBEAT_INTERVAL", "2.9")
    monkeypatch.setenv("ACTIONQ_WORKER_LEASE_SECONDS", "3")
    settings = load_settings()
    assert (settings.heartbeat_interval, settings.worker_lease_seconds) == (2.9, 3.0)


def test_a_stall_limit_not_longer_than_the_heartbeat_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    message = refusal(monkeypatch, ACTIONQ_WORKER_STALL_SECONDS="1", ACTIONQ_HEARTBEAT_INTERVAL="1")
    assert "ACTIONQ_WORKER_STALL_SECONDS must be longer than ACTIONQ_HEARTBEAT_INTERVAL" in message


# --- comma-separated lists -------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "parsed"),
    [
        ("", []),
        (" , ,", []),
        ("tests.tools_for_tests", ["tests.tools_for_tests"]),
        (" mytools ,other.tools,", ["mytools", "other.tools"]),
    ],
)
def test_tool_modules_are_a_comma_list(
    monkeypatch: pytest.MonkeyPatch, raw: str, parsed: list[str]
) -> None:
    monkeypatch.setenv("ACTIONQ_TOOL_MODULES", raw)
    assert load_settings().tool_modules == parsed


def test_tool_env_allow_is_a_comma_list_that_refuses_own_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ACTIONQ_TOOL_ENV_ALLOW", "AWS_*, GITHUB_TOKEN")
    assert load_settings().tool_env_allow == ["AWS_*", "GITHUB_TOKEN"]
    message = refusal(monkeypatch, ACTIONQ_TOOL_ENV_ALLOW="AWS_*, actionq_api_keys")
    assert "may not pass actionq's own settings (actionq_api_keys)" in message


def test_archival_is_off_unless_both_a_period_and_a_sink_are_set(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = load_settings()
    assert (settings.archive_after_seconds, settings.archive_url) == (0, None)
    assert settings.archive_statuses == ["finished"]
    message = refusal(monkeypatch, ACTIONQ_ARCHIVE_AFTER_SECONDS="60")
    assert "ACTIONQ_ARCHIVE_AFTER_SECONDS needs ACTIONQ_ARCHIVE_URL" in message


def test_archive_statuses_are_a_comma_list_of_those_that_can_be_archived(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ACTIONQ_ARCHIVE_STATUSES", "finished, error,idle")
    assert load_settings().archive_statuses == ["finished", "error", "idle"]
    message = refusal(monkeypatch, ACTIONQ_ARCHIVE_STATUSES="finished,running")
    assert "ACTIONQ_ARCHIVE_STATUSES" in message
    message = refusal(monkeypatch, ACTIONQ_ARCHIVE_PG_SCHEMA="Bad-Name")
    assert "ACTIONQ_ARCHIVE_PG_SCHEMA" in message


def test_an_archive_url_must_name_a_sink_it_knows(monkeypatch: pytest.MonkeyPatch) -> None:
    message = refusal(monkeypatch, ACTIONQ_ARCHIVE_URL="s3://u:hunter2@bucket/x")
    assert "ACTIONQ_ARCHIVE_URL" in message and "postgresql://" in message
    assert "hunter2" not in message  # a URL may hold a password: never echoed
    monkeypatch.setenv("ACTIONQ_ARCHIVE_URL", "postgresql://archiver@db/actionq")
    assert load_settings().archive_url == "postgresql://archiver@db/actionq"
