"""Bad input, everywhere a row enters: each case through `normalize_trajectories`, the annotator,
the labeller, the collator and the CLI, each ending in an error that names the row and the field
(or, where there is a sensible reading, handled)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from atlas_hf import (
    CriticalStepAnnotator,
    CriticalStepDataCollator,
    CriticalStepLabeller,
    RandomOracle,
    TrajectoryError,
    normalize_trajectories,
)
from atlas_hf.scripts.cli import main as cli

USER, STEP = {"role": "user", "content": "find the key"}, {"role": "assistant", "content": "I look around."}
GOOD = [USER, STEP, {"role": "user", "content": "You see a key."}, {"role": "assistant", "content": "I take it."}]


def chat(*first: object) -> list:
    """A good two-step chat whose first turns are replaced by `first`."""
    return [*first, *GOOD[len(first) :]]


# (case, messages, critical_steps, the field the error names; None: handled, the row is read)
CASES = [
    ("steps as floats", GOOD, [0.7], "critical_steps"),
    ("steps as bools", GOOD, [True], "critical_steps"),
    ("steps as strings", GOOD, ["first"], "critical_steps"),
    ("steps as a scalar", GOOD, 1, "critical_steps"),
    ("steps nested", GOOD, [[0]], "critical_steps"),
    ("a null step", GOOD, [None], "critical_steps"),
    ("a step out of range", GOOD, [5], "critical_steps"),
    ("a negative step", GOOD, [-1], "critical_steps"),
    ("a step twice", GOOD, [1, 1], "critical_steps"),
    (
        "an image part",
        chat({"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x.png"}}]}),
        [0],
        "messages[0].content[0]",
    ),
    (
        "an audio part",
        chat(
            {
                "role": "user",
                "content": [{"type": "text", "text": "hear"}, {"type": "input_audio", "input_audio": {"data": "AAA"}}],
            }
        ),
        [0],
        "messages[0].content[1]",
    ),
    ("a part that is a string", chat({"role": "user", "content": ["hi"]}), [0], "messages[0].content[0]"),
    ("a lone surrogate", chat({"role": "user", "content": "key \ud800"}), [0], "messages[0].content"),
    ("a lone surrogate in a step", chat(USER, {"role": "assistant", "content": "\udfff"}), [0], "messages[1].content"),
    (
        "tool_calls a string",
        chat(USER, {"role": "assistant", "content": None, "tool_calls": "search()"}),
        [0],
        "messages[1].tool_calls",
    ),
    (
        "tool_calls of strings",
        chat(USER, {"role": "assistant", "content": None, "tool_calls": ["search()"]}),
        [0],
        "messages[1].tool_calls",
    ),
    ("a turn that is a string", chat("find the key"), [0], "messages[0]"),
    ("a turn that is a list", chat(["user", "find the key"]), [0], "messages[0]"),
    ("messages a string", "user: find the key", [0], "messages"),
    ("messages empty", [], [], "messages"),
    ("messages null", None, [], "messages"),
    ("a turn without role", chat({"content": "find the key"}), [0], "messages[0].role"),
    ("an unknown role", chat({"role": "wizard", "content": "find the key"}), [0], "messages[0].role"),
    ("content a number", chat({"role": "user", "content": 42}), [0], "messages[0].content"),
    ("content a dict", chat({"role": "user", "content": {"text": "find the key"}}), [0], "messages[0].content"),
    ("null content on a user turn", chat({"role": "user", "content": None}), [0], "messages[0].content"),
    (
        "text parts (handled: their text)",
        chat({"role": "user", "content": [{"type": "text", "text": "find "}, {"type": "text", "text": "the key"}]}),
        [0, 1],
        None,
    ),
]
IDS = [case[0] for case in CASES]
STEP_CASES = {case[0] for case in CASES if case[3] == "critical_steps"}


def named(field: str, row: str = "0") -> str:
    return rf"Row {row}[^,]*, field `{re.escape(field)}`"


@pytest.mark.parametrize(("case", "messages", "steps", "field"), CASES, ids=IDS)
def test_normalize_trajectories(case, messages, steps, field):
    rows = [{"messages": GOOD, "critical_steps": [0]}, {"messages": messages, "critical_steps": steps}]
    if field is None:
        assert normalize_trajectories(rows)[1]["messages"][0] == {"role": "user", "content": "find the key"}
        return
    with pytest.raises(TrajectoryError, match=named(field, "1")) as error:
        normalize_trajectories(rows)
    assert error.value.row == 1


@pytest.mark.parametrize(("case", "messages", "steps", "field"), CASES, ids=IDS)
def test_labeller_and_collator(case, messages, steps, field, smol_tokenizer):
    row = {"messages": messages, "critical_steps": steps}
    if field is None:
        labelled = CriticalStepLabeller(smol_tokenizer).label_row(row, 4)
        supervised = [t for t, label in zip(labelled.input_ids, labelled.labels) if label != -100]
        assert "I look around." in smol_tokenizer.decode(supervised)
        assert CriticalStepDataCollator(smol_tokenizer)([row])["labels"].ne(-100).sum() == len(supervised)
        return
    with pytest.raises(TrajectoryError, match=named(field, "4")):
        CriticalStepLabeller(smol_tokenizer).label_row(row, 4)
    with pytest.raises(TrajectoryError, match=named(field, "1 of the batch")):
        CriticalStepDataCollator(smol_tokenizer)([{"messages": GOOD, "critical_steps": [0]}, row])


@pytest.mark.parametrize(("case", "messages", "steps", "field"), CASES, ids=IDS)
def test_annotator_marks_the_row_and_goes_on(case, messages, steps, field):
    annotator = CriticalStepAnnotator(RandomOracle(seed=0), progress=False)
    out = annotator({"messages": [GOOD, messages, GOOD]}, [10, 11, 12])
    assert out["atlas_error"][0] == out["atlas_error"][2] == ""  # the other rows are annotated
    if field is None or case in STEP_CASES:  # the annotator writes the steps, it does not read them
        assert out["atlas_error"][1] == "" and out["critical_steps"][1]
    else:
        assert re.match(named(field, "11"), out["atlas_error"][1]), out["atlas_error"][1]
        assert annotator.stats.errors == 1


@pytest.mark.parametrize(("case", "messages", "steps", "field"), CASES, ids=IDS)
def test_cli_says_which_row_and_field_in_one_line(case, messages, steps, field, tmp_path: Path, capsys):
    source = tmp_path / "rows.jsonl"
    rows = [{"messages": GOOD, "critical_steps": [0]}, {"messages": messages, "critical_steps": steps}]
    source.write_text("\n".join(json.dumps(row) for row in rows) + "\n")  # lone surrogates travel as \\ud800 escapes
    code = cli(["annotate", str(source), "-o", str(tmp_path / "out"), "--oracle", "random"])
    err = capsys.readouterr().err
    if field is None:
        assert code == 0, err
        return
    assert code == 1
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert re.search(named(field, "1"), lines[0]), lines[0]
    assert not (tmp_path / "out").exists()  # nothing written, nothing paid


def test_rows_tokenized_by_sft_trainer_get_the_two_settings_to_pass(smol_tokenizer):
    """Stock SFTTrainer without the drop-in's two settings hands the collator its own tokenization."""
    collator = CriticalStepDataCollator(smol_tokenizer)
    with pytest.raises(ValueError, match=r"remove_unused_columns=False.*skip_prepare_dataset"):
        collator([{"input_ids": [1, 2, 3]}])
    with pytest.raises(TrajectoryError, match=r"Row 0 of the batch, field `labels`: 2 labels for 3 input_ids"):
        collator([{"input_ids": [1, 2, 3], "labels": [1, 2]}])
