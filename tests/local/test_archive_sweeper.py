"""``actionq sweeper`` archives too, as an operator runs it (its own
process, settings from the environment only): a conversation past the
retention period goes to the JSONL archive and leaves Redis."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from actionq.archive import JsonlSink
from actionq.errors import ConversationNotFound
from actionq.service import ActionQ
from actionq.settings import Settings
from tests.helpers import ROOT


def test_the_sweeper_command_archives_old_conversations(
    settings: Settings, redis_url: str, tmp_path: Path
) -> None:
    archive = tmp_path / "archive"
    with ActionQ(settings) as aq:
        old = aq.create_conversation().id
        aq.send_message(old, "archive me")
        paused = aq.create_conversation().id
        aq.pause(paused)  # a status not listed: stays
        time.sleep(1.5)
        env = {k: v for k, v in os.environ.items() if not k.startswith("ACTIONQ_")} | {
            "PYTHONPATH": str(ROOT),
            "ACTIONQ_REDIS_URL": redis_url,
            "ACTIONQ_ARCHIVE_URL": f"file://{archive}",
            "ACTIONQ_ARCHIVE_AFTER_SECONDS": "1",
            "ACTIONQ_ARCHIVE_STATUSES": "idle",
        }
        result = subprocess.run(
            [sys.executable, "-m", "actionq", "sweeper", "--once"],
            env=env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        assert "archived 1 conversation(s)" in result.stdout, (result.stdout, result.stderr)
        try:
            aq.store.get_conversation(old)
            raise AssertionError("the archived conversation is still in Redis")
        except ConversationNotFound:
            pass
        archived = JsonlSink(archive).read(old)
        assert (
            archived is not None and archived.all_events()[-1].llm_message.content == "archive me"
        )  # type: ignore[union-attr]
        assert aq.store.get_conversation(paused).id == paused
