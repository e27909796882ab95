"""The OpenAI-compatible oracle and policy against a real server: `transformers serve` on loopback,
serving the embedded SmolLM2-135M-Instruct from its local folder on the CPU (about 2 s a short request)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytest.importorskip("openai")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def served():
    """`(base_url, model_name)` of a `transformers serve` process, stopped after the module."""
    from atlas_hf.models import ensure_default_model_cached

    folder = str(ensure_default_model_cached())
    cli = shutil.which("transformers", path=str(Path(sys.executable).parent)) or "transformers"
    port = _free_port()
    log = open(Path(os.environ.get("TMPDIR", "/tmp")) / f"atlas-serve-{port}.log", "w")
    process = subprocess.Popen(
        [cli, "serve", folder, "--host", "127.0.0.1", "--port", str(port), "--device", "cpu", "--dtype", "float32"],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1"},
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2).read()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"transformers serve did not start: {Path(log.name).read_text()[-2000:]}")
                time.sleep(0.5)
        yield f"http://127.0.0.1:{port}/v1", folder
    finally:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


def test_the_oracle_annotates_through_a_real_server_and_resumes(served, tmp_path):
    """A 135M model rarely answers the selector well: every row must end annotated or marked, never crash,
    and a rerun asks only the rows that were marked."""
    from atlas_hf import annotate_dataset, load_sample
    from atlas_hf.annotation.oracles.openai_chat import OpenAIChatOracle

    base_url, model = served
    sample = load_sample().select(range(2))
    oracle = OpenAIChatOracle(model=model, base_url=base_url, max_tokens=64, max_concurrency=2, timeout=120)
    annotated, annotator = annotate_dataset(sample, oracle, 0.3, tmp_path)
    assert annotator.stats.sent == 2 and oracle.usage.requests >= 2 and oracle.usage.input_tokens > 0
    for row in annotated:
        assert bool(row["critical_steps"]) != bool(row["atlas_error"])  # a valid answer, or the reason why not
    marked = sum(bool(row["atlas_error"]) for row in annotated)
    _, again = annotate_dataset(sample, OpenAIChatOracle(model=model, base_url=base_url, max_tokens=64), 0.3, tmp_path)
    assert again.stats.sent == marked and again.stats.cached == 2 - marked


def test_rollouts_through_the_server_act_as_the_model_in_process(served):
    """Greedy decoding of the same float32 weights on the same seeds: the same actions, episode by episode."""
    pytest.importorskip("minigrid")
    from atlas_hf import evaluate_agent
    from atlas_hf.models import load_default_model, load_default_tokenizer
    from atlas_hf.evaluation.openai_policy import OpenAIChatPolicy

    base_url, model = served
    settings = dict(
        envs="babyai/GoToLocal", episodes=2, seed=11, max_turns=3, batch_size=2, max_new_tokens=20, progress=False
    )
    remote = evaluate_agent(OpenAIChatPolicy(model, base_url, max_tokens=20, timeout=120), **settings)
    local = evaluate_agent(load_default_model(), tokenizer=load_default_tokenizer(), **settings)
    assert not any(r.get("error") for r in remote.records)
    assert [r["actions"] for r in remote.records] == [r["actions"] for r in local.records]
    assert [r["messages"] for r in remote.records] == [r["messages"] for r in local.records]
