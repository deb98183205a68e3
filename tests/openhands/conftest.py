"""Fixtures of the OpenHands compatibility tests: OpenHands' own client
(openhands-sdk, in its own Python >= 3.12 venv) run as scripts.

``sdk_python`` (session) is the venv's interpreter, ``run_client(name, env,
timeout)`` runs ``clients/<name>.py`` with it, ``validate_events(events)``
gives the SDK's validation errors for a list of event dicts."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

from tests.openhands.harness import (
    BasePython,
    ClientResult,
    RunClient,
    SdkSetupError,
    ensure_sdk_venv,
    find_base_python,
    in_ci,
    install_timeout,
    run_client_with,
    sdk_venv_ready,
    validate_events_with,
)

_CACHE_FOLDER = "openhands-sdk-venv"
_found: BasePython | str | None = None


def _base_python() -> BasePython | str:
    """Looked up once per session (collection and the fixture both ask)."""
    global _found
    if _found is None:
        _found = find_base_python()
    return _found


def _cache_root(config: pytest.Config) -> Path:
    assert config.cache is not None
    return Path(config.cache.mkdir(_CACHE_FOLDER))


@pytest.hookimpl(trylast=True)  # after -m/-k deselection: the first test that will run
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The test that builds the venv gets the install's time on top of its own
    (pytest-timeout counts fixture setup); the others keep the usual limit."""
    first = next(
        (item for item in items if "sdk_python" in getattr(item, "fixturenames", ())), None
    )
    if first is None:
        return
    try:
        base = _base_python()
    except SdkSetupError:
        return  # the fixture reports it
    if isinstance(base, BasePython) and not sdk_venv_ready(_cache_root(config), base):
        first.add_marker(pytest.mark.timeout(install_timeout() + 180))


@pytest.fixture(scope="session")
def sdk_python(pytestconfig: pytest.Config) -> Path:
    """The interpreter of the cached SDK venv (openhands-sdk and
    openhands-tools pinned in tests/openhands/harness.py). No Python >= 3.12:
    skipped, but failed in CI (``CI=true``) so the tests cannot vanish."""
    try:
        base = _base_python()
        if isinstance(base, str):
            if in_ci():
                pytest.fail(f"CI=true: {base}", pytrace=False)
            pytest.skip(base)
        return ensure_sdk_venv(_cache_root(pytestconfig), base)
    except SdkSetupError as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture(scope="session")
def run_client(sdk_python: Path, tmp_path_factory: pytest.TempPathFactory) -> RunClient:
    """``run_client(script_name, env, timeout, stdin=None) -> ClientResult``:
    runs ``clients/<script_name>.py`` in a fresh folder of its own."""

    def run(
        script_name: str, env: Mapping[str, str], timeout: float, stdin: str | None = None
    ) -> ClientResult:
        cwd = tmp_path_factory.mktemp(f"client-{script_name}")
        return run_client_with(sdk_python, script_name, env, timeout, cwd=cwd, stdin=stdin)

    return run


@pytest.fixture(scope="session")
def validate_events(sdk_python: Path) -> Callable[[list[dict[str, Any]]], list[str]]:
    """``validate_events(events) -> errors``: one string per event the SDK's
    ``Event.model_validate`` refuses (with openhands.tools imported)."""

    def validate(events: list[dict[str, Any]]) -> list[str]:
        return validate_events_with(sdk_python, events)

    return validate
