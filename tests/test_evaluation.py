"""Rollout evaluation: intervals, paired differences, batched == unbatched on a model, CLI, card."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from atlas_hf.errors import InvalidInputError
from atlas_hf.evaluation.evaluator import (
    EvaluationReport,
    evaluate_agent,
    paired_difference,
    wilson_interval,
)
from atlas_hf.evaluation.policy import TransformersPolicy


def _records(env: str, outcomes: list[bool], seed: int = 0) -> list[dict]:
    return [
        {
            "env": env,
            "seed": seed + i,
            "success": ok,
            "reward": 0.9 if ok else 0.0,
            "turns": 2,
            "invalid_actions": 0,
            "actions": [],
            "messages": [],
        }
        for i, ok in enumerate(outcomes)
    ]


def test_wilson_interval_matches_the_closed_form():
    z = 1.959964
    for k, n in ((0, 10), (3, 10), (10, 10), (57, 110)):
        low, high = wilson_interval(k, n)
        # the interval's ends are the two roots p of (p - k/n)^2 = z^2 p (1 - p) / n
        for p in (low, high):
            if 0 < p < 1:
                assert math.isclose((p - k / n) ** 2, z * z * p * (1 - p) / n, rel_tol=1e-6, abs_tol=1e-12)
        assert low <= k / n <= high
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_paired_difference_pairs_by_seed_and_averages_environments():
    rng = np.random.default_rng(1)
    a_in, b_in = rng.random(200) < 0.6, rng.random(200) < 0.4
    a_out, b_out = rng.random(100) < 0.3, rng.random(100) < 0.3
    a = EvaluationReport.from_records(_records("x", list(a_in)) + _records("y", list(a_out)))
    b = EvaluationReport.from_records(_records("x", list(b_in)) + _records("y", list(b_out)))
    result = paired_difference(a, b, resamples=4000)
    expected = ((a_in.mean() - b_in.mean()) + (a_out.mean() - b_out.mean())) / 2
    assert math.isclose(result["difference"], expected, abs_tol=1e-12)
    assert result["ci95"][0] < expected < result["ci95"][1] and result["episodes"] == 300
    same = paired_difference(a, a)
    assert same["difference"] == 0.0 and same["ci95"] == [0.0, 0.0]
    alone = paired_difference(a, None, ["x"])
    assert math.isclose(alone["difference"], a_in.mean()) and alone["ci95"][0] < a_in.mean() < alone["ci95"][1]
    other_seeds = EvaluationReport.from_records(_records("x", list(b_in), seed=10_000))
    with pytest.raises(ValueError, match="share no episode of 'x'"):
        paired_difference(a, other_seeds, ["x"])


def test_report_dict_has_the_documented_fields(tmp_path: Path):
    pytest.importorskip("minigrid")
    replies = iter(["Action: turn left", "Action: dance"] * 10)
    report = evaluate_agent(
        lambda convs: [next(replies) for _ in convs],
        ["babyai/GoToLocal"],
        episodes=2,
        seed=5,
        max_turns=3,
        batch_size=2,
        records_path=tmp_path / "episodes.jsonl",
        progress=False,
    )
    entry = report.to_dict()["envs"]["babyai/GoToLocal"]
    assert {"episodes", "success_rate", "ci95", "mean_reward", "mean_turns", "invalid_action_rate"} <= set(entry)
    assert entry["episodes"] == 2 and entry["mean_turns"] == 3 and math.isclose(entry["invalid_action_rate"], 0.5)
    lines = [json.loads(line) for line in (tmp_path / "episodes.jsonl").read_text().splitlines()]
    assert [r["seed"] for r in lines] == [5, 6] and all(len(r["messages"]) == 6 for r in lines)
    assert EvaluationReport.from_records(lines).to_dict()["envs"] == report.to_dict()["envs"]


def test_policy_must_answer_every_conversation():
    pytest.importorskip("minigrid")
    with pytest.raises(ValueError, match="returned 1 replies for 2 conversations"):
        evaluate_agent(lambda convs: ["turn left"], "babyai/GoToLocal", episodes=2, batch_size=2, progress=False)


class _LoggingEnv:
    """Episode `seed` lasts `seed % 2 + 1` steps; every call is logged with its thread and whether the
    policy was computing at the time."""

    name = "test/logging"

    def __init__(self, log: list, policy_busy: list, active: list) -> None:
        self.log, self.policy_busy, self.active = log, policy_busy, active

    def _enter(self, kind: str, seed: int) -> None:
        self.active.append(1)
        self.log.append((kind, seed, self.policy_busy[0], threading.current_thread().name, len(self.active)))
        time.sleep(0.002)  # long enough that two calls at once would be seen
        self.active.pop()

    def reset(self, seed: int) -> str:
        self.seed, self.turns = seed, 0
        self._enter("reset", seed)
        return f"episode {seed}"

    def step(self, action_text: str):
        from atlas_hf.evaluation.envs import StepResult

        self.turns += 1
        self._enter("step", self.seed)
        done = self.turns > self.seed % 2
        return StepResult(f"turn {self.turns}", float(done), done, {"success": done})


def test_environment_calls_overlap_the_policy_one_at_a_time_and_change_no_record():
    from atlas_hf.evaluation.envs import register_env

    log, busy, active = [], [False], []
    register_env("test/logging", lambda: _LoggingEnv(log, busy, active))

    def policy(conversations, on_reply=None):
        busy[0] = True
        before = sum(kind == "step" for kind, *_ in log)
        for i, conversation in enumerate(conversations):
            if on_reply is not None:
                on_reply(i, f"Action: step {len(conversation)}")
        deadline = time.monotonic() + 10  # the policy "computes" until its rows' steps have been played
        while on_reply is not None and sum(kind == "step" for kind, *_ in log) < before + len(conversations):
            assert time.monotonic() < deadline, "no environment step ran while the policy was computing"
            time.sleep(0.001)
        busy[0] = False
        return [f"Action: step {len(conversation)}" for conversation in conversations]

    overlapped = evaluate_agent(policy, "test/logging", episodes=6, batch_size=2, progress=False)
    calls, log[:] = list(log), []
    inline = evaluate_agent(policy, "test/logging", episodes=6, batch_size=2, progress=False, overlap_env_steps=False)
    assert [r["messages"] for r in overlapped.records] == [r["messages"] for r in inline.records]
    assert [r["turns"] for r in inline.records] == [1, 2, 1, 2, 1, 2]
    assert all(kind != "step" or during for kind, _, during, *_ in calls)  # every step played during the call
    assert any(kind == "reset" and during for kind, _, during, *_ in calls)  # a next-wave reset too
    assert {thread for *_, thread, _ in calls} == {"atlas-env_0"} and max(n for *_, n in calls) == 1
    assert not any(during for _, _, during, *_ in log) and {thread for *_, thread, _ in log} == {"MainThread"}
    timing = overlapped.timing
    assert 0 <= timing["env_wait_s"] <= timing["env_s"] <= timing["wall_s"] and timing["policy_s"] <= timing["wall_s"]
    assert inline.timing["env_wait_s"] >= inline.timing["env_s"] > 0  # inline: all of it waited for


def _tiny_chat_model(tokenizer, seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        initializer_range=0.5,
    )  # large weights: replies that depend on the prompt
    return LlamaForCausalLM(config).eval()


def test_batched_and_unbatched_rollouts_agree_episode_by_episode(smol_tokenizer):
    pytest.importorskip("minigrid")
    model = _tiny_chat_model(smol_tokenizer)
    envs = ["babyai/GoToLocal", "babyai/PickupLoc"]
    kwargs = dict(episodes=4, seed=50, tokenizer=smol_tokenizer, max_turns=3, max_new_tokens=6, progress=False)
    one = evaluate_agent(model, envs, batch_size=1, **kwargs)
    batched = evaluate_agent(model, envs, batch_size=8, **kwargs)
    assert [r["messages"] for r in one.records] == [r["messages"] for r in batched.records]
    assert one.to_dict()["envs"] == batched.to_dict()["envs"]
    # keeping each episode's key/value cache between turns changes nothing either
    fresh = evaluate_agent(
        TransformersPolicy(model, smol_tokenizer, max_new_tokens=6, reuse_cache=False),
        envs,
        batch_size=8,
        **{k: v for k, v in kwargs.items() if k not in ("tokenizer", "max_new_tokens")},
    )
    assert [r["messages"] for r in fresh.records] == [r["messages"] for r in one.records]
    # and each reply is what `generate` gives for that conversation alone
    record = one.records[-1]
    prompt = smol_tokenizer.apply_chat_template(
        record["messages"][:3], add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    output = model.generate(**prompt, max_new_tokens=6, do_sample=False, pad_token_id=smol_tokenizer.pad_token_id)
    reply = smol_tokenizer.decode(output[0, prompt["input_ids"].shape[1] :], skip_special_tokens=True).strip()
    assert reply == record["messages"][3]["content"]
    # the episodes really differ from each other (the comparison is not between empty replies)
    assert len({r["messages"][1]["content"] for r in one.records}) > 1


def test_cli_eval_prints_the_table_and_records_results_for_the_card(smol_tokenizer, tmp_path: Path):
    pytest.importorskip("minigrid")
    from peft import LoraConfig, get_peft_model

    base_dir, adapter_dir = tmp_path / "base", tmp_path / "adapter"
    model = _tiny_chat_model(smol_tokenizer)
    model.save_pretrained(base_dir)
    smol_tokenizer.save_pretrained(base_dir)
    get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj"], task_type="CAUSAL_LM")).save_pretrained(
        adapter_dir
    )
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "atlas_hf.scripts.cli",
            "eval",
            "--adapter",
            str(adapter_dir),
            "--model",
            str(base_dir),
            "--envs",
            "babyai/GoToLocal,babyai/PickupLoc",
            "--episodes",
            "3",
            "--max-turns",
            "2",
            "--max-new-tokens",
            "4",
            "--output",
            str(tmp_path / "eval.json"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    assert (
        "babyai/GoToLocal" in out.stdout and "babyai/PickupLoc" in out.stdout and "mean of environments" in out.stdout
    )
    saved = json.loads((adapter_dir / "atlas_eval.json").read_text())
    assert saved == json.loads((tmp_path / "eval.json").read_text())
    assert saved["envs"]["babyai/GoToLocal"]["episodes"] == 3 and saved["config"]["episodes"] == 3

    from huggingface_hub import ModelCard

    from atlas_hf.hub.publishing import publish_adapter

    published = Path(publish_adapter(adapter_dir, "someone/tiny-agent", local_dir=tmp_path / "hub"))
    card = ModelCard.load(published / "README.md")
    results = {(r.dataset_type, r.metric_type): r for r in card.data.eval_results}
    assert set(results) == {
        (env, metric)
        for env in ("babyai/GoToLocal", "babyai/PickupLoc")
        for metric in ("success_rate", "progress_score")
    }
    for (env, metric), result in results.items():
        key = "success_rate" if metric == "success_rate" else "mean_score"
        assert result.metric_value == round(100 * saved["envs"][env][key], 2)
        assert result.dataset_split == "seeds 1000000-1000002"
    assert "## Evaluation" in card.text and "| babyai/PickupLoc | 3 |" in card.text


def seen_object_policy(conversations: list[list[dict]]) -> list[str]:
    """A deterministic scripted agent: go to the first object in view, else turn left."""
    import re

    replies = []
    for conversation in conversations:
        seen = re.search(r"You see (\w+ \w+ \d+)", conversation[-1]["content"])
        replies.append(f"Action: go to {seen.group(1)}" if seen else "Action: turn left")
    return replies


RESUMABLE_RUN = """
import sys, time
from test_evaluation import seen_object_policy
from atlas_hf.evaluation.evaluator import evaluate_agent

def slow(conversations):
    time.sleep(0.1)
    return seen_object_policy(conversations)

evaluate_agent(slow, "babyai/GoToLocal,babyai/PickupLoc", episodes=6, seed=40, max_turns=4, batch_size=2,
               records_path=sys.argv[1], progress=False)
"""


def test_a_killed_evaluation_resumes_and_plays_only_the_missing_episodes(tmp_path: Path):
    pytest.importorskip("minigrid")
    import os
    import signal
    import time

    from atlas_hf.evaluation.records import read_records

    records = tmp_path / "episodes.jsonl"
    script = tmp_path / "run.py"
    script.write_text(RESUMABLE_RUN)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")])}
    process = subprocess.Popen([sys.executable, str(script), str(records)], env=env, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while len(read_records(records)) < 3 and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.02)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    with records.open("a") as f:
        f.write('{"env": "babyai/GoToLocal", "se')  # a line cut short by the kill
    kept = read_records(records)
    assert 3 <= len(kept) < 12, process.stderr.read()

    started: list[tuple[str, ...]] = []

    def counting(conversations):
        started.extend(c[0]["content"] for c in conversations if len(c) == 1)
        return seen_object_policy(conversations)

    resumed = evaluate_agent(
        counting,
        "babyai/GoToLocal,babyai/PickupLoc",
        episodes=6,
        seed=40,
        max_turns=4,
        batch_size=2,
        records_path=records,
        progress=False,
    )
    assert len(started) == 12 - len(kept)  # the recorded episodes were not played again
    whole = evaluate_agent(
        seen_object_policy,
        "babyai/GoToLocal,babyai/PickupLoc",
        episodes=6,
        seed=40,
        max_turns=4,
        batch_size=2,
        records_path=tmp_path / "whole.jsonl",
        progress=False,
    )
    assert resumed.records == whole.records and read_records(records) == whole.records
    assert resumed.to_dict()["envs"] == whole.to_dict()["envs"]


def test_more_episodes_play_only_the_new_seeds_and_settings_must_match(tmp_path: Path):
    pytest.importorskip("minigrid")
    records = tmp_path / "episodes.jsonl"
    first = evaluate_agent(
        seen_object_policy, "babyai/GoToLocal", episodes=3, seed=7, max_turns=3, records_path=records, progress=False
    )
    calls: list[int] = []

    def counting(conversations):
        calls.extend(1 for c in conversations if len(c) == 1)
        return seen_object_policy(conversations)

    more = evaluate_agent(
        counting, "babyai/GoToLocal", episodes=5, seed=7, max_turns=3, records_path=records, progress=False
    )
    assert (
        len(calls) == 2
        and more.records[:3] == first.records
        and [r["seed"] for r in more.records] == [7, 8, 9, 10, 11]
    )
    fewer = evaluate_agent(
        counting, "babyai/GoToLocal", episodes=2, seed=7, max_turns=3, records_path=records, progress=False
    )
    assert len(calls) == 2 and fewer.records == first.records[:2]
    from atlas_hf.evaluation.evaluator import recorded_report

    # what a caller checks before loading a model: the same report without playing, or None
    recorded = recorded_report(records, "babyai/GoToLocal", episodes=5, seed=7, max_turns=3)
    assert recorded is not None and recorded.records == more.records
    assert recorded.to_dict()["envs"] == more.to_dict()["envs"]
    assert recorded_report(records, "babyai/GoToLocal", episodes=6, seed=7, max_turns=3) is None
    assert recorded_report(records, "babyai/GoToLocal,babyai/PickupLoc", episodes=1, seed=7, max_turns=3) is None
    assert len(json.loads("[" + ",".join(records.read_text().splitlines()) + "]")) == 5  # nothing was dropped
    with pytest.raises(ValueError, match="max_turns=3, not 4"):
        evaluate_agent(
            counting, "babyai/GoToLocal", episodes=5, seed=7, max_turns=4, records_path=records, progress=False
        )
    again = evaluate_agent(
        counting,
        "babyai/GoToLocal",
        episodes=2,
        seed=7,
        max_turns=3,
        records_path=records,
        resume=False,
        progress=False,
    )
    assert len(calls) == 4 and again.records == first.records[:2]


def test_each_environment_can_play_its_own_number_of_episodes(tmp_path: Path):
    """A suite gives a slow, long environment fewer episodes than a quick one; the seeds of each are the
    first `n` from `seed`, the same episodes an int count would play, and a resumed file is read alike."""
    pytest.importorskip("minigrid")
    from atlas_hf.evaluation.evaluator import recorded_report

    envs = "babyai/GoToLocal,babyai/PickupLoc"
    counts = {"babyai/GoToLocal": 3, "babyai/PickupLoc": 1}
    records = tmp_path / "episodes.jsonl"
    report = evaluate_agent(
        seen_object_policy,
        envs,
        episodes=counts,
        seed=40,
        max_turns=4,
        batch_size=2,
        records_path=records,
        progress=False,
    )
    assert {name: result.episodes for name, result in report.envs.items()} == counts
    assert [(r["env"], r["seed"]) for r in report.records] == [
        ("babyai/GoToLocal", 40),
        ("babyai/GoToLocal", 41),
        ("babyai/GoToLocal", 42),
        ("babyai/PickupLoc", 40),
    ]
    same = evaluate_agent(
        seen_object_policy, envs, episodes=np.int64(3), seed=40, max_turns=4, batch_size=2, progress=False
    )  # numpy counts are counts
    assert report.records == same.records[:3] + same.records[3:4]  # the per-env count takes the first seeds
    assert (
        report.config["episodes"] == counts
        and json.loads(json.dumps(report.to_dict()))["config"]["episodes"] == counts
    )
    assert recorded_report(records, envs, counts, 40, max_turns=4).records == report.records
    with pytest.raises(InvalidInputError, match=r"no count for \['babyai/PickupLoc'\]"):
        evaluate_agent(seen_object_policy, envs, episodes={"babyai/GoToLocal": 2}, progress=False)
    with pytest.raises(InvalidInputError, match="episodes must be positive, got 0 for babyai/PickupLoc"):
        evaluate_agent(seen_object_policy, envs, episodes={**counts, "babyai/PickupLoc": 0}, progress=False)
