"""Every paid answer is on disk the moment it arrives: a SIGKILL half-way through costs at most the
requests in flight, and the re-run pays only for the rest. Odd replies end as marked rows, never as
an exception out of `map`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from anthropic_standin import AnthropicStandIn, Fault

KEY = "test-anthropic-SECRET-key-0123456789"
ROWS = 24

RUN = """
import json, sys
from datasets import Dataset
from atlas_hf import AnthropicOracle, CriticalStepAnnotator

rows, base_url, cache_dir, key = json.load(open(sys.argv[1])), sys.argv[2], sys.argv[3], sys.argv[4]
oracle = AnthropicOracle(api_key=key, base_url=base_url, max_concurrency=2, max_retries=0, timeout=10.0)
annotator = CriticalStepAnnotator(oracle, cache_dir=cache_dir, progress=False)
out = Dataset.from_list(rows).map(annotator, batched=True, batch_size=64)
print(json.dumps({"errors": sum(bool(e) for e in out["atlas_error"]), "rows": len(out)}))
"""


def trajectories(n: int) -> list[dict]:
    rows = []
    for k in range(n):
        messages = [{"role": "user", "content": f"Task {k}: find the answer."}]
        for i in range(4):
            messages += [
                {"role": "assistant", "content": f"Thought {i} of task {k}\nAction: search[{i}]"},
                {"role": "user", "content": f"Observation {i} of task {k}."},
            ]
        rows.append({"messages": messages})
    return rows


def cache_entries(folder: Path) -> int:
    return sum(1 for _ in folder.glob("*/*.json"))


def posts(api: AnthropicStandIn) -> int:
    return sum(r["method"] == "POST" and r["path"] == "/v1/messages" for r in api.requests)


def test_sigkill_mid_run_loses_at_most_the_requests_in_flight(tmp_path: Path):
    data, cache, script = tmp_path / "rows.json", tmp_path / "cache", tmp_path / "run.py"
    data.write_text(json.dumps(trajectories(ROWS)))
    script.write_text(RUN)
    with AnthropicStandIn(api_key=KEY, latency=0.25) as api:
        process = subprocess.Popen(
            [sys.executable, str(script), str(data), api.base_url, str(cache), KEY],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 120
        while cache_entries(cache) < 6 and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.02)
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
        kept, sent = cache_entries(cache), posts(api)
        assert 6 <= kept < ROWS, process.stderr.read()
        # at most max_concurrency=2 requests were in flight when the process died
        assert sent - kept <= 2

        out = subprocess.run(
            [sys.executable, str(script), str(data), api.base_url, str(cache), KEY],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout.strip().splitlines()[-1]) == {"errors": 0, "rows": ROWS}
        assert posts(api) - sent == ROWS - kept  # the re-run paid only for what was not on disk
        assert cache_entries(cache) == ROWS


@pytest.mark.parametrize("kind", ["malformed_json", "no_usage", "null_content", "refusal", "max_tokens"])
def test_an_odd_reply_marks_its_row_and_the_rest_are_answered(tmp_path: Path, kind: str):
    from datasets import Dataset

    from atlas_hf import AnthropicOracle, CriticalStepAnnotator

    with AnthropicStandIn(api_key=KEY) as api:
        api.inject(Fault(kind, after=2))
        oracle = AnthropicOracle(api_key=KEY, base_url=api.base_url, max_concurrency=1, max_retries=0, timeout=10.0)
        annotator = CriticalStepAnnotator(oracle, cache_dir=str(tmp_path / "cache"), progress=False)
        out = Dataset.from_list(trajectories(6)).map(annotator, batched=True, with_indices=True)
    errors = [e for e in out["atlas_error"] if e]
    assert len(errors) == 1 and "row 2" in annotator.errors[0]
    expected = {
        "malformed_json": "malformed",
        "no_usage": "malformed",
        "null_content": "malformed",
        "refusal": "stop_reason=refusal",
        "max_tokens": "max_tokens",
    }[kind]
    assert expected in errors[0]
    assert cache_entries(tmp_path / "cache") == 5


BATCH_RUN = """
import json, sys
from atlas_hf import AnthropicOracle
rows, base_url, state, key = json.load(open(sys.argv[1])), sys.argv[2], sys.argv[3], sys.argv[4]
oracle = AnthropicOracle(api_key=key, base_url=base_url, use_batches=True, batch_state_dir=state,
                         batch_poll_interval=0.01, timeout=30.0)
answers = oracle.annotate([r["messages"] for r in rows], 0.3)
print(json.dumps([a.steps for a in answers]))
"""


def test_a_batch_whose_create_reply_is_lost_is_found_not_paid_twice(tmp_path: Path):
    from atlas_hf import AnthropicOracle

    rows = trajectories(5)
    with AnthropicStandIn(api_key=KEY) as api:
        api.inject("create_batch_drop")
        oracle = AnthropicOracle(
            api_key=KEY,
            base_url=api.base_url,
            use_batches=True,
            batch_state_dir=tmp_path,
            batch_poll_interval=0.01,
            max_retries=3,
        )
        answers = oracle.annotate([r["messages"] for r in rows], 0.3)
        assert len(api.batches) == 1 and api.paths("POST") == ["/v1/messages/batches"]
    assert all(a.error is None and a.steps for a in answers)


def test_sigkill_inside_the_batch_create_call_never_submits_twice(tmp_path: Path):
    data, state, script = tmp_path / "rows.json", tmp_path / "state", tmp_path / "run.py"
    data.write_text(json.dumps(trajectories(6)))
    script.write_text(BATCH_RUN)
    with AnthropicStandIn(api_key=KEY) as api:
        api.inject(Fault("create_batch_hang", seconds=60))
        process = subprocess.Popen(
            [sys.executable, str(script), str(data), api.base_url, str(state), KEY],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 120
        while not api.batches and time.monotonic() < deadline:
            time.sleep(0.02)
        os.kill(process.pid, signal.SIGKILL)  # the batch exists; its id never reached the client
        process.wait()
        assert len(api.batches) == 1
        out = subprocess.run(
            [sys.executable, str(script), str(data), api.base_url, str(state), KEY],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert out.returncode == 0, out.stderr
        assert len(api.batches) == 1 and api.paths("POST") == ["/v1/messages/batches"]
    assert all(steps for steps in json.loads(out.stdout.strip().splitlines()[-1]))
