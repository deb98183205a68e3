"""The client of ``python -m bench --only openhands`` (bench/openhands_client.py)
still drives a real ``actionq up`` with the suite's SDK venv, and reports what
the benchmark reads. A smoke test of the script, not of any figure: the
benchmark's own venv (with openhands-agent-server) is not built here."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.openhands_peer import CLIENT, MODEL_KEY, STEPS_KEY, step_seconds
from tests.fake_model import FakeModel
from tests.openhands.harness import _run_bounded, client_env
from tests.up_process import UpProcess

pytestmark = pytest.mark.openhands


def test_the_bench_client_runs_a_batch_on_actionq(
    sdk_python: Path, stack: UpProcess, tmp_path: Path
) -> None:
    echo = {"tool_calls": [{"name": "terminal", "arguments": {"command": "echo x"}}]}
    with FakeModel(api_key=MODEL_KEY) as fake:
        fake.script(STEPS_KEY, [echo, echo, {"content": "done"}])
        env = {
            "OHB_API_URL": stack.url,
            "OHB_API_KEY": stack.key,
            "OHB_MODEL_URL": fake.base_url,
            "OHB_MODEL_KEY": MODEL_KEY,
            "OHB_WORKING_DIR": str(tmp_path / "workspace"),
            "OHB_TIMEOUT": "60",
            "OHB_MODE": "batch",
            "OHB_CONVERSATIONS": "2",
            "OHB_MESSAGE": STEPS_KEY,
        }
        done = _run_bounded([str(sdk_python), str(CLIENT)], 150, client_env(env), tmp_path)
    assert done.returncode == 0, done.stderr[-4000:]
    conversations = json.loads(done.stdout.strip().splitlines()[-1])["conversations"]
    assert [c["status"] for c in conversations] == ["finished", "finished"]
    for conversation in conversations:
        steps = step_seconds(conversation)
        assert len(steps) == 2 and all(s > 0 for s in steps)
        assert conversation["end"] >= conversation["observations"][-1]
