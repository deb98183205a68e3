"""The harness checking itself (tests/openhands/test_harness.py), no actionq needed.

OH_CLIENT_SELFTEST_CONVERSATION: validate this conversation's events
(read from OH_CLIENT_API_URL); OH_CLIENT_SELFTEST_LOG_ERROR: log this text
as an ERROR from an SDK logger, as RemoteConversation does with an event
that fails validation on the WebSocket; OH_CLIENT_SELFTEST_EXPECTED_ERROR: a
message prefix the script expects to be logged (finish's ``expected_errors``).
"""

from __future__ import annotations

import os

from _common import finish, make_agent, run_script
from openhands.sdk.logger import get_logger


def main() -> None:
    agent = make_agent()
    if os.environ.get("OH_CLIENT_SELFTEST_LOG_ERROR"):
        logger = get_logger("openhands.sdk.conversation.impl.remote_conversation")
        logger.error(os.environ["OH_CLIENT_SELFTEST_LOG_ERROR"])
    result = {
        "model": agent.llm.model,
        "base_url": agent.llm.base_url,
        "tools": [tool.name for tool in agent.tools],
    }
    expected = os.environ.get("OH_CLIENT_SELFTEST_EXPECTED_ERROR")
    finish(
        result,
        os.environ.get("OH_CLIENT_SELFTEST_CONVERSATION") or None,
        expected_errors=(expected,) if expected else (),
    )


if __name__ == "__main__":
    run_script(main)
