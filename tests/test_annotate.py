"""CriticalStepAnnotator (cache, retries, errors, num_proc, fingerprints), the baselines, agreement."""

from __future__ import annotations

import json
import random
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Sequence

import pytest
from datasets import Dataset, load_from_disk
from datasets.fingerprint import Hasher

from atlas_hf.annotation.agreement import oracle_agreement
from atlas_hf.annotation.annotator import AnnotationError, CriticalStepAnnotator, cache_key
from atlas_hf.annotation.oracles.base import CATEGORIES, Annotation, usage_fields, validate_annotation
from atlas_hf.annotation.oracles.pricing import ModelPrice, OracleUsage
from atlas_hf.annotation.oracles.baselines import AllStepsOracle, RandomOracle
from atlas_hf.trajectories.schema import max_selected_steps

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def trajectory(task: str, steps: int) -> list[dict[str, Any]]:
    """A ReAct-style chat: the task, then `steps` assistant turns each followed by an observation."""
    messages = [{"role": "user", "content": f"Task: {task}"}]
    for k in range(steps):
        messages.append({"role": "assistant", "content": f"Thought {k} on {task}. Action: act[{k}]"})
        messages.append({"role": "user", "content": f"Observation {k} for {task}."})
    return messages


def rows(n: int, steps: int = 5) -> list[dict[str, Any]]:
    return [{"messages": trajectory(f"task-{i}", steps), "id": i} for i in range(n)]


class ScriptedOracle:
    """A test oracle whose behaviour is fixed by `mode`; it logs every trajectory it is asked about.

    The log is a file (one JSON line per trajectory asked), so calls are counted across processes
    and the oracle's pickled state, hence its fingerprint, never changes.

    - "first": step 0, a valid answer.
    - "every_step_then_fix": marks every step (over the cap); given feedback, marks step 0 only.
    - "bad_marked": rows whose task contains "BAD" always get an out-of-range step; others step 0.
    `fail_after`: raise (a simulated kill) when asked beyond that many trajectories in total.
    """

    def __init__(self, log: Path, mode: str = "first", fail_after: int | None = None) -> None:
        self.log, self.mode, self.fail_after = str(log), mode, fail_after

    @property
    def identity(self) -> str:
        return f"scripted:{self.mode}"

    def annotate(
        self,
        trajectories: Sequence[list[dict[str, Any]]],
        max_ratio: float,
        feedback: Sequence[str | None] | None = None,
    ) -> list[Annotation]:
        if self.fail_after is not None and len(calls(self.log)) + len(trajectories) > self.fail_after:
            raise RuntimeError("simulated kill")
        feedback = feedback or [None] * len(trajectories)
        out = []
        with open(self.log, "a", encoding="utf-8") as f:
            for messages, fb in zip(trajectories, feedback):
                task = messages[0]["content"]
                f.write(json.dumps({"task": task, "feedback": fb}) + "\n")
                n = sum(m["role"] == "assistant" for m in messages)
                if self.mode == "every_step_then_fix" and fb is None:
                    steps = list(range(n))
                elif self.mode == "bad_marked" and "BAD" in task:
                    steps = [n + 5]
                else:
                    steps = [0]
                out.append(Annotation(steps, ["Plan Creation"] * len(steps), ["scripted"] * len(steps), "plan"))
        return out


def calls(log: str | Path) -> list[dict[str, Any]]:
    path = Path(log)
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def on_disk(data: list[dict[str, Any]], tmp_path: Path, name: str = "ds") -> Dataset:
    """A dataset backed by cache files (in-memory ones never reuse the datasets cache)."""
    Dataset.from_list(data).save_to_disk(str(tmp_path / name))
    return load_from_disk(str(tmp_path / name))


def test_annotator_adds_the_columns(tmp_path: Path) -> None:
    oracle = ScriptedOracle(tmp_path / "log")
    ds = Dataset.from_list(rows(4)).map(CriticalStepAnnotator(oracle, progress=False), batched=True)
    assert ds["critical_steps"] == [[0]] * 4
    assert ds["critical_categories"] == [["Plan Creation"]] * 4
    assert ds["critical_reasons"] == [["scripted"]] * 4
    assert ds["atlas_plan"] == ["plan"] * 4 and ds["atlas_error"] == [""] * 4
    assert ds["atlas_oracle"] == ["scripted:first(max_ratio=0.3)"] * 4 and ds["id"] == [0, 1, 2, 3]


def test_killed_run_resumes_and_sends_only_the_missing_rows(tmp_path: Path) -> None:
    data = on_disk(rows(10), tmp_path)
    cache = tmp_path / "cache"
    dying = ScriptedOracle(tmp_path / "log1", fail_after=5)
    with pytest.raises(RuntimeError, match="simulated kill"):
        data.map(CriticalStepAnnotator(dying, cache_dir=cache, progress=False), batched=True, batch_size=2)
    first = {c["task"] for c in calls(tmp_path / "log1")}
    assert len(first) == 4  # two whole batches answered before the kill
    assert len(list(cache.rglob("*.json"))) == 4 and not list(cache.rglob("*.tmp"))

    annotator = CriticalStepAnnotator(ScriptedOracle(tmp_path / "log2"), cache_dir=cache, progress=False)
    out = data.map(annotator, batched=True, batch_size=2)
    second = {c["task"] for c in calls(tmp_path / "log2")}
    assert len(second) == 6 and not first & second
    assert first | second == {f"Task: task-{i}" for i in range(10)}
    assert (annotator.stats.cached, annotator.stats.sent, annotator.stats.errors) == (4, 6, 0)
    assert out["critical_steps"] == [[0]] * 10

    again = CriticalStepAnnotator(ScriptedOracle(tmp_path / "log3"), cache_dir=cache, progress=False)
    data.map(again, batched=True, batch_size=3, load_from_cache_file=False)
    assert calls(tmp_path / "log3") == [] and again.stats.cached == 10


def test_corrupt_or_invalid_cache_entries_are_asked_again(tmp_path: Path) -> None:
    data = Dataset.from_list(rows(5))
    cache = tmp_path / "cache"
    oracle = ScriptedOracle(tmp_path / "log")
    data.map(CriticalStepAnnotator(oracle, cache_dir=cache, progress=False), batched=True)
    assert len(calls(oracle.log)) == 5
    paths = {
        i: next(cache.rglob(f"{cache_key(r['messages'], oracle.identity, 0.3)}.json")) for i, r in enumerate(rows(5))
    }
    paths[1].write_text('{"key": "trunc')  # a torn write
    entry = json.loads(paths[3].read_text())
    entry["annotation"]["steps"] = [99]  # out of range: not a valid answer
    paths[3].write_text(json.dumps(entry))
    annotator = CriticalStepAnnotator(oracle, cache_dir=cache, progress=False)
    out = data.map(annotator, batched=True)
    assert [c["task"] for c in calls(oracle.log)[5:]] == ["Task: task-1", "Task: task-3"]
    assert out["critical_steps"] == [[0]] * 5 and annotator.stats.cached == 3
    assert json.loads(paths[3].read_text())["annotation"]["steps"] == [0]  # rewritten


def test_cap_overrun_is_retried_once_with_the_error_as_feedback(tmp_path: Path) -> None:
    oracle = ScriptedOracle(tmp_path / "log", mode="every_step_then_fix")
    annotator = CriticalStepAnnotator(oracle, max_ratio=0.4, progress=False)
    out = Dataset.from_list(rows(3, steps=5)).map(annotator, batched=True)
    log = calls(oracle.log)
    assert len(log) == 6 and [c["feedback"] is None for c in log] == [True] * 3 + [False] * 3
    assert all("5 steps were chosen but at most 2 of 5" in c["feedback"] for c in log[3:])
    assert out["critical_steps"] == [[0]] * 3 and out["atlas_error"] == [""] * 3
    assert (annotator.stats.sent, annotator.stats.retried, annotator.stats.errors) == (3, 3, 0)


def test_rows_that_stay_invalid_are_marked_counted_and_not_cached(tmp_path: Path) -> None:
    data = rows(4)
    data[2]["messages"][0]["content"] = "Task: BAD one"
    oracle = ScriptedOracle(tmp_path / "log", mode="bad_marked")
    annotator = CriticalStepAnnotator(oracle, cache_dir=tmp_path / "cache", progress=False)
    out = Dataset.from_list(data).map(annotator, batched=True, with_indices=True)
    assert out["critical_steps"] == [[0], [0], [], [0]]
    assert "invalid answer after a retry" in out["atlas_error"][2] and "out of range" in out["atlas_error"][2]
    assert annotator.stats.errors == 1 and "row 2" in annotator.summary()
    Dataset.from_list(data).map(
        CriticalStepAnnotator(oracle, cache_dir=tmp_path / "cache", progress=False), batched=True
    )
    log = [c["task"] for c in calls(oracle.log)]
    assert len(log) == 4 + 1 + 2 and log[5:] == ["Task: BAD one"] * 2  # only the error row, asked and retried


def test_strict_raises_naming_the_row_and_the_reason(tmp_path: Path) -> None:
    data = rows(5)
    data[3]["messages"][0]["content"] = "Task: BAD"
    annotator = CriticalStepAnnotator(ScriptedOracle(tmp_path / "log", "bad_marked"), strict=True, progress=False)
    with pytest.raises(AnnotationError, match=r"row 3: .*out of range"):
        Dataset.from_list(data).map(annotator, batched=True, with_indices=True)


def test_a_row_without_assistant_turn_gets_a_clear_error(tmp_path: Path) -> None:
    data = rows(3)
    data[1]["messages"] = [{"role": "user", "content": "Task: nobody answers"}]
    oracle = ScriptedOracle(tmp_path / "log")
    out = Dataset.from_list(data).map(CriticalStepAnnotator(oracle, progress=False), batched=True, with_indices=True)
    assert out["atlas_error"][1].startswith("row 1 has no assistant turn in 'messages'")
    assert out["critical_steps"][1] == [] and len(calls(oracle.log)) == 2


def test_all_error_first_batch_does_not_fix_a_null_column_type(tmp_path: Path) -> None:
    data = rows(4)
    data[0]["messages"] = data[1]["messages"] = [{"role": "user", "content": "no steps"}]
    out = Dataset.from_list(data).map(
        CriticalStepAnnotator(ScriptedOracle(tmp_path / "log"), progress=False), batched=True, batch_size=2
    )
    assert out["critical_steps"] == [[], [], [0], [0]] and out["critical_categories"][3] == ["Plan Creation"]
    assert out.features["critical_steps"].feature.dtype == "int64"


def test_num_proc_2_gives_the_same_result(tmp_path: Path) -> None:
    data = Dataset.from_list(rows(8))
    oracle = ScriptedOracle(tmp_path / "log", mode="every_step_then_fix")
    out = data.map(CriticalStepAnnotator(oracle, progress=False), batched=True, batch_size=2, num_proc=2)
    assert out["critical_steps"] == [[0]] * 8 and out["id"] == list(range(8))
    assert len(calls(oracle.log)) == 16  # each row asked, then retried with feedback, in the workers


def test_fingerprint_is_stable_and_a_second_map_sends_nothing(tmp_path: Path) -> None:
    log = tmp_path / "log"
    a, b = (CriticalStepAnnotator(ScriptedOracle(log), progress=False) for _ in range(2))
    assert Hasher.hash(a) == Hasher.hash(b)
    assert Hasher.hash(a) != Hasher.hash(CriticalStepAnnotator(ScriptedOracle(log), max_ratio=0.5, progress=False))
    assert Hasher.hash(a) != Hasher.hash(CriticalStepAnnotator(ScriptedOracle(log, "bad_marked"), progress=False))
    data = on_disk(rows(6), tmp_path)
    first = data.map(a, batched=True)
    assert len(calls(log)) == 6 and a.stats.sent == 6
    assert Hasher.hash(a) == Hasher.hash(b)  # using it changed nothing that is hashed
    second = data.map(b, batched=True)  # no annotation cache: only the datasets cache can answer
    assert len(calls(log)) == 6 and b.stats.rows == 0
    assert second["critical_steps"] == first["critical_steps"] and second.cache_files == first.cache_files


def test_random_oracle_is_deterministic_per_trajectory_and_at_the_cap() -> None:
    data = [trajectory(f"t{i}", n) for i, n in enumerate([1, 2, 3, 7, 10, 10, 23])]
    one = RandomOracle(seed=3).annotate(data, 0.3)
    shuffled = list(range(len(data)))
    random.Random(1).shuffle(shuffled)
    other = RandomOracle(seed=3).annotate([data[i] for i in shuffled], 0.3)
    assert [other[shuffled.index(i)].steps for i in range(len(data))] == [a.steps for a in one]
    for messages, a in zip(data, one):
        n = sum(m["role"] == "assistant" for m in messages)
        assert len(a.steps) == max_selected_steps(n, 0.3) and validate_annotation(a, n, 0.3) is None
        assert a.categories == ["Critical Action"] * len(a.steps) and a.reasons[0] == "random baseline"
    many = [trajectory(f"u{i}", 10) for i in range(20)]
    assert [a.steps for a in RandomOracle(0).annotate(many, 0.3)] != [
        a.steps for a in RandomOracle(1).annotate(many, 0.3)
    ]
    assert RandomOracle(0).identity != RandomOracle(1).identity


def test_all_steps_oracle() -> None:
    [a, b] = AllStepsOracle().annotate([trajectory("x", 4), [{"role": "user", "content": "hi"}]], 1.0)
    assert a.steps == [0, 1, 2, 3] and validate_annotation(a, 4, 1.0) is None and b.error


def test_agreement_against_hand_counts() -> None:
    predicted = [
        {"critical_steps": [0, 2, 5], "critical_categories": ["Plan Creation", "Critical Action", "Critical Action"]},
        {"critical_steps": [1], "critical_categories": ["Self Correction"]},
        {"critical_steps": [], "critical_categories": [], "atlas_error": "failed"},
    ]
    reference = [
        {
            "critical_steps": [0, 2, 3],
            "critical_categories": ["Plan Creation", "Critical Observation", "Critical Action"],
        },
        {"critical_steps": [1, 4], "critical_categories": ["Self Correction", "Plan Creation"]},
        {"critical_steps": [0], "critical_categories": ["Critical Action"]},
    ]
    report = oracle_agreement(predicted, reference)
    # both mark: row0 {0, 2}, row1 {1} -> 3; predicted 4; reference 6
    assert (report.steps.true_positives, report.steps.predicted, report.steps.reference) == (3, 4, 6)
    assert report.precision == pytest.approx(3 / 4) and report.recall == pytest.approx(3 / 6)
    assert report.f1 == pytest.approx(2 * 0.75 * 0.5 / 1.25)
    assert report.category_agreement == pytest.approx(2 / 3) and report.prediction_errors == 1
    action = report.per_category["Critical Action"]  # predicted (0,2),(0,5); reference (0,3),(2,0)
    assert (action.true_positives, action.predicted, action.reference) == (0, 2, 2) and action.f1 == 0.0
    plan = report.per_category["Plan Creation"]  # predicted (0,0); reference (0,0),(1,4)
    assert (plan.precision, plan.recall) == (1.0, 0.5) and plan.f1 == pytest.approx(2 / 3)
    assert report.per_category["Self Correction"].f1 == 1.0
    assert "precision 0.750" in report.format() and "Critical Observation" in report.format()
    same = oracle_agreement(Dataset.from_list(reference), Dataset.from_list(reference))
    assert (same.f1, same.category_agreement) == (1.0, 1.0)


def test_agreement_refuses_misaligned_inputs() -> None:
    with pytest.raises(ValueError, match="2 rows but reference has 1"):
        oracle_agreement([{"critical_steps": []}] * 2, [{"critical_steps": []}])
    a = {"messages": trajectory("a", 1), "critical_steps": [0]}
    b = {"messages": trajectory("b", 1), "critical_steps": [0]}
    with pytest.raises(ValueError, match="Row 0 holds different trajectories"):
        oracle_agreement([a], [b])
    with pytest.raises(ValueError, match="Row 0 of the predicted annotation has 1 critical_steps but 2"):
        oracle_agreement([{"critical_steps": [0], "critical_categories": ["Plan Creation"] * 2}], [a])


def test_progress_bar_summary_and_usage(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    annotator = CriticalStepAnnotator(ScriptedOracle(tmp_path / "log"), progress=True)
    Dataset.from_list(rows(3)).map(annotator, batched=True)
    assert "Annotating critical steps" in capsys.readouterr().err
    assert annotator.summary().startswith(
        "Annotated 3 trajectories with scripted:first (max_ratio=0.3): "
        "0 from the cache, 3 sent to the oracle, 0 retried, 0 errors."
    )
    usage = OracleUsage(ModelPrice(input_per_mtok=3.0, output_per_mtok=15.0))
    usage.add(
        SimpleNamespace(
            input_tokens=1000, output_tokens=200, cache_read_input_tokens=50, cache_creation_input_tokens=0
        )
    )
    cost = (1000 * 3.0 + 50 * 3.0 * 0.1 + 200 * 15.0) / 1e6
    assert usage_fields(SimpleNamespace(usage=usage)) == {"tokens": "1,250", "cost": f"${cost:.4f}"}
    assert usage_fields(annotator.oracle) == {}  # an oracle that counts nothing


def test_bad_configuration_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="max_ratio"):
        CriticalStepAnnotator(RandomOracle(), max_ratio=0.0)
    with pytest.raises(TypeError, match="Oracle"):
        CriticalStepAnnotator(object())  # type: ignore[arg-type]
    with pytest.raises(KeyError, match="no 'messages' column"):
        Dataset.from_list([{"traj": trajectory("x", 1)}]).map(
            CriticalStepAnnotator(RandomOracle(), progress=False), batched=True
        )


def real_rows(per_file: int) -> list[dict[str, Any]]:
    """A sample of both shipped-alongside files, as `messages` rows (tau-bench's `traj` renamed)."""
    hotpot, tau = DATA / "fireact" / "hotpotqa.jsonl", DATA / "tau-bench" / "gpt-4o-airline.json"
    if not (hotpot.exists() and tau.exists()):
        pytest.skip(
            f"real data not found under {DATA} (needs fireact/hotpotqa.jsonl and tau-bench/gpt-4o-airline.json)"
        )
    lines = hotpot.read_text(encoding="utf-8").splitlines()
    sample = [json.loads(lines[i]) for i in range(0, len(lines), max(1, len(lines) // per_file))][:per_file]
    tau_rows = json.loads(tau.read_text(encoding="utf-8"))
    sample += [{"messages": r["traj"]} for r in tau_rows[:: max(1, len(tau_rows) // per_file)][:per_file]]
    return sample


def test_random_oracle_on_the_real_data(tmp_path: Path) -> None:
    data = real_rows(25)
    annotator = CriticalStepAnnotator(RandomOracle(seed=0), cache_dir=tmp_path / "cache", progress=False)
    out = Dataset.from_list(data).map(annotator, batched=True, batch_size=8)
    for row in out:
        n = sum(m["role"] == "assistant" for m in row["messages"])
        assert row["atlas_error"] == "" and 1 <= len(row["critical_steps"]) == max_selected_steps(n, 0.3)
        assert set(row["critical_categories"]) <= set(CATEGORIES)
    assert annotator.stats.sent == len(data) and len(list((tmp_path / "cache").rglob("*.json"))) == len(data)
    # the same trajectory from a plain list (no None-filled struct fields) hits the same cache entries
    direct = CriticalStepAnnotator(RandomOracle(seed=0), cache_dir=tmp_path / "cache", progress=False)
    columns = direct({"messages": [r["messages"] for r in data]})
    assert direct.stats.cached == len(data) and columns["critical_steps"] == out["critical_steps"]


def test_annotate_dataset_shows_one_bar_with_a_total(capsys, tmp_path):
    from atlas_hf import annotate_dataset, load_sample

    sample = load_sample()
    annotated, annotator = annotate_dataset(sample, RandomOracle(seed=1), 0.3, tmp_path / "cache", batch_size=5)
    err = capsys.readouterr().err
    assert annotator.stats.rows == len(sample) == len(annotated)
    assert f"{len(sample)}/{len(sample)}" in err  # the bar knows its total
    assert "Annotating:" not in err  # `map`'s own bar is not drawn beside it
    again, second = annotate_dataset(annotated, RandomOracle(seed=1), 0.3, tmp_path / "cache", batch_size=5)
    assert second.stats.cached == len(sample) and again["critical_steps"] == annotated["critical_steps"]


def test_the_sent_count_moves_with_each_answer(tmp_path: Path) -> None:
    """The progress bar shows `sent=` as answers arrive, not only when the whole batch is back."""
    seen: list[int] = []

    class Streaming:
        identity = "streaming:first"

        def annotate(self, trajectories, max_ratio, feedback=None, on_answer=None):
            answers = [Annotation([0], ["Plan Creation"], ["first"], "plan") for _ in trajectories]
            for j, answer in enumerate(answers):
                on_answer(j, answer)
                seen.append(annotator.stats.sent)
            return answers

    annotator = CriticalStepAnnotator(Streaming(), progress=False)
    Dataset.from_list(rows(3)).map(annotator, batched=True)
    assert seen == [1, 2, 3] and annotator.stats.sent == 3 and annotator.stats.retried == 0
