"""Flower, the dashboard users run beside actionq (``celery -A actionq flower``),
sees every action as a task, from the events actionq's transport sends
without waiting and the ``task-sent`` events its store scripts publish."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from actionq.models import ActionState
from actionq.service import ActionQ
from tests.conftest import WorkerFactory
from tests.helpers import ROOT, free_port, wait_for


@pytest.fixture
def flower(settings_env: dict[str, str], tmp_path: Path) -> Any:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACTIONQ_")}
    env |= settings_env | {"PYTHONPATH": str(ROOT), "FLOWER_UNAUTHENTICATED_API": "true"}
    with (tmp_path / "flower.log").open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "actionq", "flower",
             f"--port={port}", "--address=127.0.0.1"],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    base = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        try:
            return httpx.get(base + "/healthcheck", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_for(healthy, 60, 0.2, "Flower to answer")
        yield base
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()


def _tasks(base: str) -> dict[str, dict[str, Any]]:
    reply = httpx.get(base + "/api/tasks", timeout=5)
    reply.raise_for_status()
    tasks: dict[str, dict[str, Any]] = reply.json()
    return tasks


def test_flower_shows_every_action_as_a_succeeded_task(
    aq: ActionQ, start_worker: WorkerFactory, flower: str
) -> None:
    start_worker(concurrency=2)

    def run(n: int) -> list[tuple[str, str]]:
        refs = []
        for _ in range(n):
            cid = aq.create_conversation().id
            refs.append((cid, aq.submit_action(cid, "terminal", {"command": "true"}).id))
        for _, aid in refs:
            assert aq.wait_for_action(aid, 30).state == ActionState.DONE
        return refs

    # Flower subscribes to events once it is up; a first action shows it listens.
    [(_, first)] = run(1)
    wait_for(lambda: first in _tasks(flower), 30, 0.2, "Flower to see a first task")

    refs = run(5)

    def all_succeeded() -> bool:
        tasks = _tasks(flower)
        return all(tasks.get(aid, {}).get("state") == "SUCCESS" for _, aid in refs)

    wait_for(all_succeeded, 30, 0.2, "Flower to show every action succeeded")
    tasks = _tasks(flower)
    for cid, aid in refs:
        task = tasks[aid]
        assert task["name"] == "actionq.run_action"
        assert task["args"] == f"(conversation={cid}, action={aid})"  # ids, never arguments
        assert task["result"] == "'done'"
        # task-sent (from the store's script), received, started, succeeded
        assert task["sent"] and task["received"] and task["started"] and task["succeeded"]
