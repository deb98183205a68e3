"""The console's conversation list with 10,000 conversations in the store: the
first page loads (the time is printed, for docs/benchmarks.md, not
asserted), paging goes on, and a status filter shows only that status."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from playwright.sync_api import Page, expect

from tests.up_process import UpProcess, client_of, start_up, stop_up

CONVERSATIONS = 10_000
PAGE = 50


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UpProcess]:
    """This module's `up` (in place of conftest's): its store holds 10,000
    idle conversations and one paused."""
    base = tmp_path_factory.mktemp("console-crowded")
    up = start_up(base / ".actionq", base / "up.log")
    with client_of(up) as aq:

        def create(count: int) -> None:
            for _ in range(count):
                aq.store.create_conversation()

        started = time.monotonic()
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(create, [CONVERSATIONS // 4] * 4))
        paused = aq.create_conversation()
        aq.pause(paused.id)
        print(f"\ncreated {CONVERSATIONS + 1} conversations in {time.monotonic() - started:.1f} s")
    yield up
    stop_up(up)


def test_the_first_page_of_10000_loads_and_pages_on(page: Page, stack: UpProcess) -> None:
    page.goto("/console/")
    page.fill("#api-key", stack.key)
    started = time.monotonic()
    page.click("#login button[type=submit]")
    rows = page.locator("#conversations tbody tr[data-id]")
    expect(rows).to_have_count(PAGE)
    loaded = time.monotonic() - started
    by_page = page.locator("#conversations").get_attribute("data-loaded-ms")
    print(
        f"\nfirst page of {CONVERSATIONS + 1} conversations: {loaded * 1000:.0f} ms from the "
        f"login click to {PAGE} rows shown; the page's own fetch and render: {by_page} ms"
    )
    expect(page.locator("#list-summary")).to_have_text(f"1-{PAGE} of {CONVERSATIONS + 1}")
    first = rows.first.get_attribute("data-id")

    page.click("#next-page")
    expect(page.locator("#list-summary")).to_have_text(
        f"{PAGE + 1}-{2 * PAGE} of {CONVERSATIONS + 1}"
    )
    expect(rows).to_have_count(PAGE)
    assert first not in [rows.nth(i).get_attribute("data-id") for i in range(PAGE)]

    page.select_option("#status-filter", "paused")
    expect(rows).to_have_count(1)
    expect(rows.first.locator(".status")).to_have_attribute("data-status", "paused")
    expect(page.locator("#list-summary")).to_have_text("1-1 of 1")
