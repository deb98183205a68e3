"""A tool for tests/worker/test_install.py, loaded by a worker through
ACTIONQ_TOOL_MODULES: it reports, from the process that runs the action (a
prefork pool child), what that process has loaded."""

from __future__ import annotations

import os
import sys
import weakref
from collections import defaultdict
from typing import Any

from pydantic import BaseModel

from actionq.tools import ToolContext, tool

# The names actionq's modules had before they were one package: a module
# loaded under one of them is a second copy (its own signals, its own app).
OLD_TOP_LEVEL_NAMES = ("app", "tasks")
TASK_FAILURE_UID = "actionq.task_failure"  # tasks/signals.py connects with it
RUN_ACTION_TASK = "actionq.run_action"


class NoArgs(BaseModel):
    pass


def _receiver_function(receiver: Any) -> Any:
    return receiver() if isinstance(receiver, weakref.ReferenceType) else receiver


def _modules_sharing_a_file() -> dict[str, list[str]]:
    """actionq's source files that two module names were loaded from (the
    checkout's symlinks or a second sys.path entry let one file be imported
    twice). Only actionq's: the stdlib has aliases of its own (os.path)."""
    import actionq.tasks

    folders = tuple(
        os.path.realpath(package.__path__[0]) + os.sep for package in (actionq, actionq.tasks)
    )
    names_by_file: dict[str, list[str]] = defaultdict(list)
    for name, module in list(sys.modules.items()):
        path = getattr(module, "__file__", None)
        if path and os.path.realpath(path).startswith(folders):
            names_by_file[os.path.realpath(path)].append(name)
    return {path: sorted(names) for path, names in names_by_file.items() if len(names) > 1}


@tool("report_loaded_modules", NoArgs)
def report_loaded_modules(args: NoArgs, ctx: ToolContext) -> dict[str, Any]:
    """What this process loaded: modules under the old names, files loaded
    twice, actionq's task_failure receivers and run_action tasks."""
    from celery import _state, signals

    # All of them, not only those with actionq's dispatch_uid: a second copy
    # connected without it would hide from a filter.
    failure_receivers = [_receiver_function(r) for _, r in signals.task_failure.receivers]
    actionq_uids = [key for key, _ in signals.task_failure.receivers if key[0] == TASK_FAILURE_UID]
    expected_handler = getattr(sys.modules.get("actionq.tasks.signals"), "on_task_failure", None)
    run_action_modules = [
        getattr(celery_app.tasks[RUN_ACTION_TASK].run, "__module__", None)
        for celery_app in _state._get_active_apps()
        if RUN_ACTION_TASK in celery_app.tasks
    ]
    return {
        "pid": os.getpid(),
        "ppid": os.getppid(),
        "old_name_modules": sorted(
            name
            for name in sys.modules
            if any(name == old or name.startswith(old + ".") for old in OLD_TOP_LEVEL_NAMES)
        ),
        "modules_sharing_a_file": _modules_sharing_a_file(),
        "task_failure_receivers": [
            f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', '?')}"
            for fn in failure_receivers
        ],
        "task_failure_receiver_is_actionqs": [fn is expected_handler for fn in failure_receivers],
        "task_failure_receivers_with_actionq_uid": len(actionq_uids),
        "run_action_task_modules": run_action_modules,
    }
