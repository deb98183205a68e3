"""An archived conversation in the console (real headless Chromium, real
`actionq up` archiving to JSONL files): its timeline is shown from the
archive, read-only: no control to send, run, pause or resume."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from playwright.sync_api import Page, expect

from tests.console.test_console import WAIT_MS, call, card, login, scripted, status_of
from tests.helpers import wait_for
from tests.up_process import UpProcess, start_up, stop_up


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UpProcess]:
    base = tmp_path_factory.mktemp("up")
    up = start_up(
        base / ".actionq",
        base / "up.log",
        ACTIONQ_ARCHIVE_URL=(base / "archive").as_uri(),
        ACTIONQ_ARCHIVE_AFTER_SECONDS="2",
        ACTIONQ_ARCHIVE_STATUSES="finished",
        ACTIONQ_ARCHIVE_INTERVAL="0.5",
    )
    yield up
    stop_up(up)


def test_an_archived_conversation_shows_its_timeline_read_only(
    page: Page, stack: UpProcess
) -> None:
    client = stack.client()
    agent = scripted(call("echo from-the-archive"), {"text": "done"})
    cid = client.create_conversation({"agent": agent})["id"]
    client.send_message(cid, "go", run=True)

    def archived() -> bool:
        response = httpx.get(f"{stack.url}/api/conversations/{cid}", headers=stack.headers())
        return response.status_code == 200 and response.json().get("archived") is True

    wait_for(archived, WAIT_MS / 1000, 0.2, "the finished conversation to be archived")
    client.close()

    login(page, stack)
    page.goto(f"/console/#/c/{cid}")
    expect(page.locator("#archived")).to_have_text("archived; read-only")
    expect(status_of(page)).to_have_attribute("data-status", "finished")
    expect(card(page, "from-the-archive").locator(".result pre")).to_have_text("from-the-archive\n")
    for control in ("#message", "#send", "#run", "#pause", "#resume"):
        expect(page.locator(control)).to_have_count(0)
