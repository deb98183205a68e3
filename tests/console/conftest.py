"""Fixtures of the console tests: a real ``actionq up`` and the system's
Chromium (Debian's ``chromium`` package) driven by Playwright for Python
through ``executable_path`` (Playwright's own browser download is never
used). No Chromium: skipped with the reason, but failed in CI (``CI=true``)
so the tests cannot vanish. Each test gets a new browser context (its own
cookies and storage) in a browser that Playwright launched on a fresh
temporary profile."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, sync_playwright

from tests.openhands.harness import in_ci
from tests.up_process import UpProcess

CHROMIUM_VARIABLE = "ACTIONQ_TEST_CHROMIUM"
# Where the tests leave their screenshots (default: the test's temp folder);
# docs/console.md's pictures were made with ACTIONQ_TEST_SCREENSHOTS=docs/images.
SCREENSHOTS_VARIABLE = "ACTIONQ_TEST_SCREENSHOTS"
LAUNCH_ARGS = [
    "--no-sandbox",  # CI runs as root, where Chromium's sandbox cannot start
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
NAMES = ("chromium", "chromium-browser", "google-chrome")


def find_chromium() -> str | None:
    given = os.environ.get(CHROMIUM_VARIABLE)
    if given:
        return given
    return next((path for name in NAMES if (path := shutil.which(name))), None)


@pytest.fixture(scope="session")
def chromium() -> Iterator[Browser]:
    path = find_chromium()
    if path is None:
        reason = (
            f"no Chromium found (looked for {', '.join(NAMES)} on PATH and ${CHROMIUM_VARIABLE}): "
            "install Debian's package with `apt-get install -y chromium`"
        )
        if in_ci():
            pytest.fail(f"CI=true: {reason}", pytrace=False)
        pytest.skip(reason)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=path, headless=True, args=LAUNCH_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def context(chromium: Browser, stack: UpProcess) -> Iterator[BrowserContext]:
    context = chromium.new_context(base_url=stack.url, viewport={"width": 1280, "height": 900})
    context.set_default_timeout(30_000)
    yield context
    context.close()


@pytest.fixture
def page(context: BrowserContext) -> Page:
    return context.new_page()


@pytest.fixture
def screenshots(tmp_path: Path) -> Path:
    folder = Path(os.environ.get(SCREENSHOTS_VARIABLE) or tmp_path / "screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder
