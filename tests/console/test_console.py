"""The console (/console) in a real headless Chromium against a real
``actionq up``: real prefork workers, real crashes (``kill -9 $PPID`` kills
the pool child running the command), the live SSE stream, the session
cookie. What a person at the page sees and does; the side effects are
checked on disk and through the API."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import BrowserContext, Locator, Page, expect

from actionq.local.processes import free_port
from tests.up_process import UpProcess

WAIT_MS = 60_000  # bound of every wait for something the workers do


def login(page: Page, stack: UpProcess) -> None:
    page.goto("/console/")
    page.fill("#api-key", stack.key)
    page.click("#login button[type=submit]")
    expect(page.locator("#conversations")).to_be_visible()


def scripted(*turns: dict[str, Any]) -> dict[str, Any]:
    return {"kind": "scripted", "turns": list(turns)}


def call(command: str) -> dict[str, Any]:
    return {"tool_calls": [{"tool": "terminal", "arguments": {"command": command}}]}


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def status_of(page: Page) -> Locator:
    return page.locator("#conversation-status .status")


def card(page: Page, command_part: str) -> Locator:
    """The timeline's card of the call whose command holds ``command_part``."""
    return page.locator(".call").filter(has=page.locator("pre.command", has_text=command_part))


def crashed_conversation(page: Page, stack: UpProcess, marker: Path) -> tuple[str, float]:
    """A scripted agent whose second call kills its worker, watched from the
    page: returns the conversation and how long after the crash was written
    the page showed `error` (its own clock: the status badge's `since`)."""
    client = stack.client()
    crash = f"echo ran >> {marker}; printf 'working\\nbefore-crash\\n'; kill -9 $PPID"
    agent = scripted(call("echo hello"), call(crash), call("echo after-resume"), {"text": "done"})
    cid = client.create_conversation({"agent": agent})["id"]
    page.goto(f"/console/#/c/{cid}")
    expect(status_of(page)).to_have_attribute("data-status", "idle")
    page.evaluate("window.notReloaded = true")
    client.send_message(cid, "go", run=True)
    expect(status_of(page)).to_have_attribute("data-status", "error", timeout=WAIT_MS)
    assert page.evaluate("window.notReloaded === true"), "the page reloaded"
    shown_at = int(page.locator("#conversation-status").get_attribute("data-since") or 0) / 1000
    crash_event = next(e for e in client.all_events(cid) if e["event"]["kind"] == "AgentErrorEvent")
    written_at = datetime.fromisoformat(crash_event["event"]["timestamp"]).timestamp()
    client.close()
    return cid, shown_at - written_at


def test_a_crash_shows_live_with_its_cause_and_last_output(
    page: Page, stack: UpProcess, tmp_path: Path, screenshots: Path
) -> None:
    login(page, stack)
    cid, delay = crashed_conversation(page, stack, tmp_path / "ran")
    print(f"\nthe page showed `error` {delay * 1000:.0f} ms after the crash was written")
    assert delay < 1.0, f"the page showed the crash {delay:.2f} s after it was written"

    crashed = card(page, "kill -9")
    expect(crashed).to_have_class("call crashed")
    panel = crashed.locator(".crash-panel")
    expect(panel).to_have_attribute("data-cause", "worker_lost")
    expect(panel.locator("dd[data-field=cause]")).to_have_text("worker_lost")
    expect(panel.locator("dd[data-field=signal]")).to_have_text("9 (SIGKILL)")
    expect(panel.locator(".plain")).to_contain_text(
        "The process running this command was killed by signal 9 (SIGKILL)"
    )
    expect(panel.locator(".plain")).to_contain_text("it was not run again")
    expect(panel.locator(".tail")).to_contain_text("before-crash")
    # The first call's result beside it; the crashed one ran once.
    expect(card(page, "echo hello").locator(".result pre")).to_have_text("hello\n")
    assert lines(tmp_path / "ran") == ["ran"]

    page.screenshot(path=screenshots / "console-crashed-conversation.png", full_page=True)
    panel.screenshot(path=screenshots / "console-crash-panel.png")
    page.goto("/console/")
    row = page.locator(f"#conversations tr[data-id='{cid}']")
    expect(row.locator(".status")).to_have_attribute("data-status", "error")
    expect(row.locator(".cause")).to_have_text("worker_lost, signal 9")


def test_resume_from_the_page_runs_the_next_call_live(
    page: Page, stack: UpProcess, tmp_path: Path
) -> None:
    login(page, stack)
    marker = tmp_path / "ran"
    crashed_conversation(page, stack, marker)
    page.click("#resume")
    # The agent read the crash as that call's result and made its next call.
    expect(card(page, "after-resume").locator(".result pre")).to_have_text(
        "after-resume\n", timeout=WAIT_MS
    )
    expect(status_of(page)).to_have_attribute("data-status", "finished", timeout=WAIT_MS)
    expect(page.locator("#notice")).to_be_hidden()
    assert lines(marker) == ["ran"]  # the crashed call was not run again


def test_a_call_behind_a_crash_is_greyed_and_a_message_from_the_page_goes_on(
    page: Page, stack: UpProcess, tmp_path: Path
) -> None:
    login(page, stack)
    never = tmp_path / "never"
    client = stack.client()
    crash_then_touch = {
        "tool_calls": [
            {"tool": "terminal", "arguments": {"command": "kill -9 $PPID"}},
            {"tool": "terminal", "arguments": {"command": f"touch {never}"}},
        ]
    }
    agent = scripted(crash_then_touch, call("echo next"), {"text": "done"})
    cid = client.create_conversation({"agent": agent})["id"]
    page.goto(f"/console/#/c/{cid}")
    expect(status_of(page)).to_have_attribute("data-status", "idle")
    # A control the API refuses shows the API's own message.
    refused = httpx.post(f"{stack.url}/api/conversations/{cid}/resume", headers=stack.headers())
    assert refused.status_code == 409
    page.click("#resume")
    expect(page.locator("#notice")).to_have_text(refused.json()["error"]["message"])

    client.send_message(cid, "go", run=True)
    expect(status_of(page)).to_have_attribute("data-status", "error", timeout=WAIT_MS)
    expect(card(page, "kill -9")).to_have_class("call crashed")
    behind = card(page, f"touch {never}")
    expect(behind).to_have_class("call not-run")
    expect(behind.locator(".result")).to_contain_text("Not run")

    page.fill("#message", "try another way")
    page.click("#send")
    expect(page.locator(".msg.user").last).to_contain_text("try another way")
    expect(card(page, "echo next").locator(".result pre")).to_have_text("next\n", timeout=WAIT_MS)
    expect(status_of(page)).to_have_attribute("data-status", "finished", timeout=WAIT_MS)
    assert not never.exists()  # not run, and not run later either
    client.close()


def test_retry_from_the_page_until_quarantine_then_force(
    page: Page, stack: UpProcess, tmp_path: Path
) -> None:
    login(page, stack)
    marker = tmp_path / "runs"
    # Crashes its worker on its first two runs, succeeds on the third.
    command = f"echo run >> {marker}; [ $(wc -l < {marker}) -ge 3 ] || kill -9 $PPID"
    client = stack.client()
    cid = client.create_conversation()["id"]
    page.goto(f"/console/#/c/{cid}")
    expect(status_of(page)).to_have_attribute("data-status", "idle")
    client.submit_action(cid, {"tool": "terminal", "arguments": {"command": command}})
    calls = page.locator(".call")
    expect(calls.nth(0)).to_have_class("call crashed", timeout=WAIT_MS)

    calls.nth(0).locator("button.retry").click()
    # A new call, linked both ways to the crashed one; it crashes again.
    expect(calls).to_have_count(2, timeout=WAIT_MS)
    original_id = calls.nth(0).get_attribute("data-action-id")
    expect(calls.nth(1).locator(".link-note")).to_contain_text(f"retry of {original_id[:8]}")
    expect(calls.nth(0).locator(".retried-as")).to_be_visible()
    expect(calls.nth(1)).to_have_class("call crashed", timeout=WAIT_MS)

    # Two crashes of the same call: quarantined; the page shows the refusal.
    calls.nth(1).locator("button.retry").click()
    refusal = calls.nth(1).locator(".refusal")
    expect(refusal).to_contain_text("force")
    expect(page.locator("#notice")).to_contain_text("force")
    assert calls.count() == 2 and lines(marker) == ["run", "run"]

    calls.nth(1).locator("button.force").click()
    expect(calls).to_have_count(3, timeout=WAIT_MS)
    expect(calls.nth(2).locator(".result .exit")).to_have_text("exit code 0", timeout=WAIT_MS)
    assert lines(marker) == ["run", "run", "run"]  # each retry ran once
    client.close()


def test_reject_with_a_reason_then_approve(
    page: Page, stack: UpProcess, tmp_path: Path, screenshots: Path
) -> None:
    login(page, stack)
    rejected, accepted = tmp_path / "rejected", tmp_path / "accepted"
    client = stack.client()
    agent = scripted(call(f"touch {rejected}"), call(f"echo x >> {accepted}"), {"text": "done"})
    body = {"agent": agent, "confirmation_policy": {"kind": "AlwaysConfirm"}}
    cid = client.create_conversation(body)["id"]
    page.goto(f"/console/#/c/{cid}")
    client.send_message(cid, "tidy up", run=True)

    expect(page.locator("#confirm-bar")).to_be_visible(timeout=WAIT_MS)
    expect(card(page, "touch")).to_have_class("call pending")
    page.fill("#reject-reason", "not that one")
    page.click("#reject")
    expect(card(page, "touch").locator(".rejection")).to_have_text("Rejected: not that one")
    kinds = [e["event"]["kind"] for e in client.all_events(cid)]
    assert "UserRejectObservation" in kinds

    expect(status_of(page)).not_to_have_attribute("data-status", "waiting_for_confirmation")
    page.click("#run")
    expect(card(page, "echo x")).to_have_class("call pending", timeout=WAIT_MS)
    page.click("#approve")
    expect(card(page, "echo x").locator(".result .exit")).to_have_text(
        "exit code 0", timeout=WAIT_MS
    )
    expect(status_of(page)).to_have_attribute("data-status", "finished", timeout=WAIT_MS)
    assert not rejected.exists()
    assert lines(accepted) == ["x"]  # approved: run once
    client.close()
    # The list, with the conversations of this module's tests so far.
    page.goto("/console/")
    expect(page.locator(f"#conversations tr[data-id='{cid}'] .status")).to_be_visible()
    page.screenshot(path=screenshots / "console-list.png")


class _Attacker:
    """A page on another origin that posts a form to the API as soon as it loads."""

    def __init__(self, target: str) -> None:
        form = (
            f'<form id="f" method="POST" action="{target}/api/conversations" enctype="text/plain">'
            '<input name="{}" value=""></form>'
            '<script>document.getElementById("f").submit()</script>'
        )
        page = f"<!doctype html><title>not actionq</title>{form}".encode()

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/html")
                self.send_header("Content-Length", str(len(page)))
                self.end_headers()
                self.wfile.write(page)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.port = free_port()
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def attacker(stack: UpProcess) -> Iterator[_Attacker]:
    site = _Attacker(stack.url)
    yield site
    site.close()


def posted_status(page: Page, url: str) -> int:
    """Open ``url`` (the attacker's page) and return the status the API
    answered its form POST with."""
    with page.expect_response(lambda r: r.url.endswith("/api/conversations")) as answer:
        page.goto(url)
    return answer.value.status


def test_without_the_key_nothing_shows_and_cross_site_posts_are_refused(
    context: BrowserContext, stack: UpProcess, attacker: _Attacker
) -> None:
    client = stack.client()
    before = client.count_conversations()
    page = context.new_page()
    page.goto("/console/")
    expect(page.locator("#login")).to_be_visible()
    expect(page.locator("#conversations")).to_have_count(0)
    assert stack.key not in page.content()
    # The page's own API calls without a session are refused too.
    status = page.evaluate("fetch('/api/console/conversations').then(r => r.status)")
    assert status == 401

    # No session: another site's form POST is refused.
    assert posted_status(page, f"http://localhost:{attacker.port}/") == 401
    # Logged in: a cross-site page (localhost is another site than 127.0.0.1)
    # gets no cookie sent (SameSite=Strict) ...
    login(page, stack)
    assert posted_status(page, f"http://localhost:{attacker.port}/") == 401
    # ... and a same-site page of another origin (another port), which the
    # browser does send the cookie from, is refused by its Origin.
    assert posted_status(page, f"http://127.0.0.1:{attacker.port}/") == 403
    assert client.count_conversations() == before  # nothing was created
    client.close()

    # Logging out ends the session: the page asks for the key again.
    page.goto("/console/")
    page.click("#logout")
    expect(page.locator("#login")).to_be_visible()
    assert httpx.get(f"{stack.url}/api/session").status_code == 401


def test_a_wrong_key_is_refused_on_the_page(page: Page, stack: UpProcess) -> None:
    page.goto("/console/")
    page.fill("#api-key", "not-the-key")
    page.click("#login button[type=submit]")
    expect(page.locator("#login .cause")).to_contain_text("invalid API key")
    expect(page.locator("#conversations")).to_have_count(0)


def test_the_page_fetches_nothing_from_elsewhere(page: Page, stack: UpProcess) -> None:
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    login(page, stack)
    elsewhere = [url for url in requested if not url.startswith(stack.url)]
    assert elsewhere == []
    headers = httpx.get(f"{stack.url}/console/").headers
    assert "script-src 'self'" in headers["content-security-policy"]
    assert headers["x-frame-options"] == "DENY"
