"""OpenAI-compatible oracle and policy against a loopback stand-in (faults a real server does not make on demand).

The same code paths against a real server (`transformers serve`) are in `test_openai_serve.py`.
"""

from __future__ import annotations

import json
import pickle
import sys

import pytest
from datasets.fingerprint import Hasher

from atlas_hf import annotate_dataset, build_oracle, evaluate_agent, load_sample
from atlas_hf.errors import InvalidInputError, OracleError
from atlas_hf.evaluation.openai_policy import OpenAIChatPolicy
from atlas_hf.annotation.oracles.openai_chat import PROMPT_VERSION, OpenAIChatOracle
from atlas_hf.trajectories.schema import num_steps

from openai_standin import Fault, OpenAIStandIn

KEY = "sk-standin-0123456789abcdef0123456789"


@pytest.fixture
def server(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    with OpenAIStandIn(key=KEY) as standin:
        yield standin


def oracle_for(server, **settings) -> OpenAIChatOracle:
    return OpenAIChatOracle(model="stand-in", base_url=server.base_url, **{"max_retries": 3, **settings})


def completions(server) -> list[dict]:
    return [r["body"] for r in server.requests if r["path"] == "/v1/chat/completions"]


def test_the_oracle_asks_through_the_tool_and_a_rerun_asks_nothing(server, tmp_path):
    sample = load_sample().select(range(6))
    annotated, annotator = annotate_dataset(sample, oracle_for(server), 0.3, tmp_path)
    for row in annotated:  # the stand-in picks the last step: every answer was read from its tool call
        assert row["critical_steps"] == [num_steps(row["messages"]) - 1] and not row["atlas_error"]
        assert row["atlas_oracle"] == f"openai(model=stand-in, prompt={PROMPT_VERSION}, max_chars=2000, max_ratio=0.3)"
    sent = completions(server)
    assert len(sent) == 6 and all(b["tool_choice"]["function"]["name"] == "record_critical_steps" for b in sent)
    assert sent[0]["temperature"] == 0 and "Critical Observation" in sent[0]["messages"][0]["content"]
    assert server.requests[0]["authorization"] == f"Bearer {KEY}"
    annotate_dataset(sample, oracle_for(server), 0.3, tmp_path)
    assert len(completions(server)) == 6  # every answer came from the cache


def test_retries_429_500_drops_and_slow_replies_and_marks_a_malformed_one(server, tmp_path):
    # row 0 meets four faults in a row; the malformed body goes to row 4 (after row 0's fifth attempt and rows 1-3)
    server.inject(Fault("429", retry_after=0.2), "500", "drop", Fault("slow", seconds=3), Fault("malformed", after=4))
    sample = load_sample().select(range(5))
    annotated, _ = annotate_dataset(
        sample, oracle_for(server, timeout=1.0, max_concurrency=1, max_retries=5), 0.3, tmp_path
    )
    errors = [row["atlas_error"] for row in annotated]
    assert errors[:4] == [""] * 4 and errors[4].startswith("malformed reply from the server")  # the map went on
    assert len(completions(server)) == 5 + 4  # each retryable fault cost one more attempt, made by the SDK


def test_a_server_without_tools_is_asked_as_text(server, tmp_path):
    server.inject("400_tools")
    oracle = oracle_for(server)
    annotated, _ = annotate_dataset(load_sample().select(range(3)), oracle, 0.3, tmp_path)
    assert all(row["critical_steps"] and not row["atlas_error"] for row in annotated)
    assert "tools" in completions(server)[0] and "tools" not in completions(server)[-1]
    assert (
        oracle_for(server, answer_format="json_schema").request_params(load_sample()[0]["messages"], 0.3)[
            "response_format"
        ]["json_schema"]["strict"]
        is True
    )


def test_an_unreadable_answer_marks_the_row_and_a_rerun_asks_only_it(server, tmp_path):
    server.inject(Fault("prose", after=1))  # the second row is answered in prose
    sample = load_sample().select(range(3))
    annotated, _ = annotate_dataset(sample, oracle_for(server, max_concurrency=1), 0.3, tmp_path)
    errors = [row["atlas_error"] for row in annotated]
    assert errors[0] == errors[2] == "" and "without a tool call or a JSON object" in errors[1]
    before = len(completions(server))
    again, _ = annotate_dataset(sample, oracle_for(server), 0.3, tmp_path)
    assert len(completions(server)) == before + 1 and not again[1]["atlas_error"]


def test_a_text_answer_is_read_from_the_reply(server):
    server.inject("text_answer")
    [answer] = oracle_for(server).annotate([load_sample()[0]["messages"]], 0.3)
    assert answer.error is None and answer.steps == [num_steps(load_sample()[0]["messages"]) - 1]


def test_a_rejected_key_raises_and_the_key_is_nowhere(server, monkeypatch, tmp_path, caplog):
    wrong = "sk-wrong-9876543210fedcba9876543210"
    monkeypatch.setenv("OPENAI_API_KEY", wrong)
    with pytest.raises(OracleError, match="configuration problem") as raised:
        oracle_for(server).annotate([load_sample()[0]["messages"]], 0.3)
    oracle = oracle_for(server)
    for text in (str(raised.value), repr(oracle), caplog.text, pickle.dumps(oracle).decode("latin-1")):
        assert wrong not in text and KEY not in text


def test_the_oracle_pickles_small_and_fingerprints_stably(server):
    a, b = oracle_for(server), oracle_for(server)
    a.annotate([load_sample()[0]["messages"]], 0.3)  # a used oracle has a client and counters
    assert Hasher.hash(a) == Hasher.hash(b) != Hasher.hash(oracle_for(server, max_chars_per_observation=10))
    assert type(build_oracle("openai", model="m", base_url="http://x/v1")) is OpenAIChatOracle
    with pytest.raises(InvalidInputError, match="needs the model's name"):
        build_oracle("openai")


def test_without_the_openai_package_the_error_says_what_to_install(server, monkeypatch):
    monkeypatch.setitem(sys.modules, "openai", None)
    with pytest.raises(InvalidInputError, match=r'pip install "atlas-hf\[openai\]"'):
        OpenAIChatPolicy("stand-in", server.base_url)


def test_the_policy_sends_every_live_episode_and_a_failed_request_is_a_recorded_failure(server, tmp_path):
    pytest.importorskip("minigrid")
    server.reply = lambda request: "Action: turn left"
    records = tmp_path / "episodes.jsonl"
    server.inject(Fault("500", after=5))  # the sixth request fails (no retries here)
    policy = OpenAIChatPolicy("stand-in", server.base_url, max_retries=0, max_concurrency=4)
    report = evaluate_agent(
        policy, "babyai/GoToLocal", episodes=4, max_turns=3, batch_size=4, records_path=records, progress=False
    )
    failed = [r for r in report.records if r.get("error")]
    assert len(failed) == 1 and "server error 500" in failed[0]["error"] and not failed[0]["success"]
    assert report.envs["babyai/GoToLocal"].failed_requests == 1 and "failed policy request" in report.format_table()
    assert all(r["turns"] == 3 for r in report.records if not r.get("error"))
    sent = completions(server)
    assert {b["temperature"] for b in sent} == {0} and {b["max_tokens"] for b in sent} == {64}
    again = evaluate_agent(
        policy, "babyai/GoToLocal", episodes=4, max_turns=3, batch_size=4, records_path=records, progress=False
    )  # resumed: only the failed episode is played
    assert not any(r.get("error") for r in again.records)
    assert len(completions(server)) == len(sent) + 3
    assert len([json.loads(line) for line in records.read_text().splitlines()]) == 4
