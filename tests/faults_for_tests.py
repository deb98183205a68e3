"""Fault injection for tests, loaded into workers as a tool module
(``ACTIONQ_TOOL_MODULES``): a pool child that receives an action's task dies
by SIGKILL *before* the task body runs, so before it can claim the action,
as many times as the number in the file named by ``TEST_KILL_BEFORE_CLAIM``
says. No production code knows about it.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

from celery.signals import task_prerun

KILL_FILE_VARIABLE = "TEST_KILL_BEFORE_CLAIM"


@task_prerun.connect
def die_before_claim(**_: Any) -> None:
    name = os.environ.get(KILL_FILE_VARIABLE)
    if not name:
        return
    path = Path(name)
    left = int(path.read_text() or 0) if path.exists() else 0
    if left <= 0:
        return
    with path.open("w") as f:
        f.write(str(left - 1))
        f.flush()
        os.fsync(f.fileno())
    os.kill(os.getpid(), signal.SIGKILL)
