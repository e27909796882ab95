"""Labels against an independent truth: the decoded labelled tokens are the critical turns' text."""

from __future__ import annotations

import json
import random

import pytest
import torch
from datasets import Dataset

from atlas_hf.training.collator import CriticalStepDataCollator
from atlas_hf.training.chat_template import tool_calls_as_text
from atlas_hf.trajectories.schema import check_messages
from atlas_hf.training.labeller import IGNORE_INDEX, CriticalStepLabeller, label_trajectory

from conftest import END_OF_TURN, read_fireact, read_tau_bench
from template_corpus import labelled_segments

TEMPLATES = ["smollm2", "llama3", "qwen_tools"]


def check_segment(name: str, segment: str, turn: dict) -> None:
    """A labelled segment is the turn's text, its tool calls and the end-of-turn marker: nothing else."""
    eot = END_OF_TURN[name]
    assert segment.endswith(eot), (name, segment[-80:])
    body = segment[: -len(eot)]
    content = (turn.get("content") or "").strip()
    calls = turn.get("tool_calls") or []
    if name == "qwen_tools":
        assert body.startswith(turn.get("content") or "")
        for call in calls:
            assert f'"name": "{call["function"]["name"]}"' in body
            arguments = call["function"]["arguments"]
            assert json.dumps(json.loads(arguments) if isinstance(arguments, str) else arguments) in body
        assert body.count("<tool_call>") == len(calls)
    elif calls:  # templates without tool calls get them as text
        expected = (turn.get("content") or "") + ("\n" if turn.get("content") else "") + tool_calls_as_text(calls)
        assert body.strip() == expected.strip()
    else:
        assert body.strip() == content
    for header in ("<|im_start|>", "<|start_header_id|>", "assistant\n"):
        assert header not in body


def sample_rows(rows, key, rng):
    out = []
    for row in rows:
        messages = row[key]
        n = sum(m["role"] == "assistant" for m in messages)
        k = max(1, round(0.3 * n))
        out.append({"messages": messages, "critical_steps": sorted(rng.sample(range(n), k))})
    return out


@pytest.fixture(scope="module")
def real_rows():
    rng = random.Random(0)
    return sample_rows(read_fireact(40), "messages", rng) + sample_rows(read_tau_bench(25), "traj", rng)


@pytest.mark.parametrize("name", TEMPLATES)
def test_labels_are_the_critical_turns_text_on_real_data(chat_tokenizers, real_rows, name):
    tokenizer = chat_tokenizers[name]
    labeller = CriticalStepLabeller(tokenizer)
    for row in real_rows:
        out = labeller.label_row(row)
        turns = [m for m in row["messages"] if m["role"] == "assistant"]
        segments = labelled_segments(tokenizer, out.input_ids, out.labels)
        assert len(segments) == len(row["critical_steps"])
        for segment, step in zip(segments, row["critical_steps"]):
            check_segment(name, segment, turns[step])
        # Nothing after the last critical turn is kept.
        assert out.labels[-1] != IGNORE_INDEX


@pytest.mark.parametrize("name", TEMPLATES)
def test_input_is_the_template_rendering(chat_tokenizers, real_rows, name):
    """The tokens are exactly the template's rendering of the trajectory, up to the last critical turn."""
    tokenizer = chat_tokenizers[name]
    row = real_rows[-1]
    out = CriticalStepLabeller(tokenizer, step_selection="all").label_row(row)
    from atlas_hf.training.chat_template import prepare_messages

    rendered = tokenizer.apply_chat_template(
        prepare_messages(tokenizer, check_messages(row["messages"])).messages, tokenize=False
    )
    decoded = tokenizer.decode(out.input_ids)
    assert rendered.startswith(decoded)
    rest = rendered[len(decoded) :]  # only the turns after the last assistant turn
    assert "assistant\n" not in rest and "assistant<|end_header_id|>" not in rest
    assert rest.strip() == "" or rest.lstrip().startswith(
        ("<|im_start|>user", "<|start_header_id|>user", "<|im_start|>tool")
    )


def test_default_system_prompt_is_context_not_label(smol_tokenizer):
    messages = [{"role": "user", "content": "Find the mug."}, {"role": "assistant", "content": "go to shelf 1"}]
    out = label_trajectory(smol_tokenizer, messages, [0])
    text = smol_tokenizer.decode(out.input_ids)
    assert "You are a helpful AI assistant named SmolLM" in text
    assert labelled_segments(smol_tokenizer, out.input_ids, out.labels) == ["go to shelf 1<|im_end|>"]


def test_tools_column_reaches_the_template(chat_tokenizers):
    tokenizer = chat_tokenizers["qwen_tools"]
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
    messages = [{"role": "user", "content": "Weather?"}, {"role": "assistant", "content": "Sunny."}]
    with_tools = label_trajectory(tokenizer, messages, [0], tools=json.dumps(tools))
    assert "get_weather" in tokenizer.decode(with_tools.input_ids)
    assert "get_weather" not in tokenizer.decode(label_trajectory(tokenizer, messages, [0]).input_ids)


def test_truncation_keeps_critical_tokens_and_counts_cut_steps(smol_tokenizer):
    rows = read_tau_bench(5)
    messages = rows[0]["traj"]
    n = sum(m["role"] == "assistant" for m in messages)
    steps = [0, n - 1]
    full = label_trajectory(smol_tokenizer, messages, steps)
    last_len = len(labelled_segments(smol_tokenizer, full.input_ids, full.labels)[-1])
    left = label_trajectory(smol_tokenizer, messages, steps, max_length=len(full.input_ids) - 10)
    assert len(left.input_ids) == len(full.input_ids) - 10
    assert left.input_ids == full.input_ids[10:] and left.num_truncated_steps == 0
    tiny = label_trajectory(smol_tokenizer, messages, steps, max_length=8)
    assert len(tiny.input_ids) == 8 and tiny.num_supervised > 0  # never every critical token
    assert tiny.num_truncated_steps == 2
    right = label_trajectory(smol_tokenizer, messages, steps, max_length=len(full.input_ids) - 1)
    assert right.num_truncated_steps == 0 or right.num_supervised > 0
    right = label_trajectory(
        smol_tokenizer, messages, steps, max_length=len(full.input_ids) // 2, truncation_side="right"
    )
    assert right.num_truncated_steps >= 1
    assert right.input_ids == full.input_ids[: len(full.input_ids) // 2] or right.input_ids == []
    assert last_len > 0


@pytest.mark.parametrize("padding_side", ["right", "left"])
def test_collator_raw_rows_match_pretokenized_and_pad(chat_tokenizers, real_rows, padding_side):
    tokenizer = chat_tokenizers["smollm2"]
    rows = real_rows[:3] + real_rows[-3:]
    collator = CriticalStepDataCollator(tokenizer, padding_side=padding_side, pad_to_multiple_of=8)
    batch = collator(rows)
    labeller = CriticalStepLabeller(tokenizer)
    assert batch["input_ids"].shape[1] % 8 == 0
    for i, row in enumerate(rows):
        ref = labeller.label_row(row)
        mask = batch["attention_mask"][i].bool()
        assert batch["input_ids"][i][mask].tolist() == ref.input_ids
        assert batch["labels"][i][mask].tolist() == ref.labels
        assert (batch["labels"][i][~mask] == IGNORE_INDEX).all()
        first = int(mask.nonzero()[0])
        assert (first == 0) == (padding_side == "right" or mask.all().item())
    pretokenized = [
        dict(zip(("input_ids", "labels"), (labeller.label_row(r).input_ids, labeller.label_row(r).labels)))
        for r in rows
    ]
    again = collator(pretokenized)
    assert torch.equal(again["input_ids"], batch["input_ids"]) and torch.equal(again["labels"], batch["labels"])


def test_collator_padding_free(smol_tokenizer, real_rows):
    rows = real_rows[:4]
    batch = CriticalStepDataCollator(smol_tokenizer, padding_free=True)(rows)
    labeller = CriticalStepLabeller(smol_tokenizer)
    refs = [labeller.label_row(r) for r in rows]
    assert "attention_mask" not in batch
    assert batch["input_ids"][0].tolist() == sum((r.input_ids for r in refs), [])
    assert batch["labels"][0].tolist() == sum((r.labels for r in refs), [])
    starts = (batch["position_ids"][0] == 0).nonzero().flatten().tolist()
    assert starts == [sum(len(r.input_ids) for r in refs[:k]) for k in range(len(refs))]


def test_pretokenizing_map_is_cached_and_num_proc_safe(smol_tokenizer, real_rows, tmp_path):
    rows = real_rows[:8]
    ds = Dataset.from_list([{"messages": r["messages"], "critical_steps": r["critical_steps"]} for r in rows[:8]])
    ds = Dataset.from_list(ds.to_list())
    path = tmp_path / "ds"
    ds.save_to_disk(str(path))
    ds = Dataset.load_from_disk(str(path))
    fn = CriticalStepLabeller(smol_tokenizer, max_length=4096)
    one = ds.map(fn, batched=True, num_proc=2)
    two = ds.map(CriticalStepLabeller(smol_tokenizer, max_length=4096), batched=True)
    assert one["input_ids"] == two["input_ids"] and one["labels"] == two["labels"]
    assert one.cache_files and one.cache_files[0]["filename"] != ds.cache_files[0]["filename"]
    three = ds.map(CriticalStepLabeller(smol_tokenizer, max_length=4096), batched=True)
    assert three.cache_files == two.cache_files  # same fingerprint: the cache is reused
    for row, ref in zip(rows, one):
        assert CriticalStepLabeller(smol_tokenizer).label_row(row).labels == ref["labels"]


def test_bad_rows_name_the_row_and_field(smol_tokenizer):
    labeller = CriticalStepLabeller(smol_tokenizer)
    with pytest.raises(ValueError, match=r"Row 3, field `critical_steps`: step 5 is out of range"):
        labeller.label_row(
            {
                "messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}],
                "critical_steps": [5],
            },
            3,
        )
    with pytest.raises(ValueError, match=r"Row 7: field 'critical_steps' is missing"):
        labeller.label_row({"messages": [{"role": "user", "content": "q"}]}, 7)


@pytest.mark.parametrize("name", TEMPLATES)
def test_one_pass_and_prefix_spans_agree(chat_tokenizers, real_rows, name):
    """The fast path (content fenced by markers, one extra rendering) finds the prefix-by-prefix spans."""
    from atlas_hf.training.chat_template import prepare_messages, render_chat, template_profile
    from atlas_hf.training.turn_spans import _fenced_spans, _Renderer

    tokenizer = chat_tokenizers[name]
    profile = template_profile(tokenizer)
    fast = 0
    for row in real_rows[::3]:
        messages = prepare_messages(tokenizer, check_messages(row["messages"])).messages
        positions = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
        chosen = [positions[s] for s in row["critical_steps"]]
        renderer = _Renderer(
            tokenizer, messages, None, profile, render_chat(tokenizer, messages, None, False, profile.template)
        )
        fenced = _fenced_spans(renderer, chosen)
        if fenced is not None:
            fast += 1
            prefix = []
            for p in chosen:
                prefix.append(renderer.prefix_span(p, prefix[-1][1] if prefix else 0))
            assert fenced == prefix
    assert fast > 0


@pytest.mark.parametrize("name", TEMPLATES)
def test_labels_on_the_embedded_sample(chat_tokenizers, name):
    """The same independent check on the shipped sample (tool calls, a `tools` column): runs without ../shared."""
    from atlas_hf.trajectories.sample import load_sample

    tokenizer = chat_tokenizers[name]
    sample = load_sample()
    labelled = CriticalStepLabeller(tokenizer).label_rows(list(sample))
    assert any(row["tools"] for row in sample)
    for row, out in zip(sample, labelled):
        turns = [m for m in row["messages"] if m["role"] == "assistant"]
        segments = labelled_segments(tokenizer, out.input_ids, out.labels)
        assert len(segments) == len(row["critical_steps"])
        for segment, step in zip(segments, row["critical_steps"]):
            check_segment(name, segment, turns[step])


def test_left_padding_never_predicts_a_first_token_from_padding(smol_tokenizer):
    """Rows cut on the left may start with a labelled token: its label must not sit after a pad."""
    rows = [{"input_ids": [5, 6, 7], "labels": [5, 6, 7]}, {"input_ids": [1, 2, 3, 4, 5], "labels": [1, 2, 3, 4, 5]}]
    left = CriticalStepDataCollator(smol_tokenizer, padding_side="left")(rows)
    assert left["labels"][0].tolist() == [IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX, 6, 7]
    right = CriticalStepDataCollator(smol_tokenizer, padding_side="right")(rows)
    assert right["labels"][0].tolist() == [5, 6, 7, IGNORE_INDEX, IGNORE_INDEX]  # position 0 is never a target


def test_pretokenized_rows_need_no_chat_template_and_are_cut_like_raw_ones(smol_tokenizer, real_rows):
    import copy

    plain = copy.deepcopy(smol_tokenizer)
    plain.chat_template = None
    labelled = CriticalStepLabeller(smol_tokenizer, max_length=64).label_row(real_rows[0])
    full = CriticalStepLabeller(smol_tokenizer).label_row(real_rows[0])
    batch = CriticalStepDataCollator(plain, max_length=64)([{"input_ids": full.input_ids, "labels": full.labels}])
    assert batch["input_ids"][0].tolist() == labelled.input_ids and batch["labels"][0].tolist() == labelled.labels


def test_bad_arguments_name_what_was_wrong(smol_tokenizer):
    messages = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]
    for make in (
        lambda: CriticalStepLabeller(smol_tokenizer, truncation_side="Left"),
        lambda: CriticalStepDataCollator(smol_tokenizer, truncation_side="Left"),
        lambda: label_trajectory(smol_tokenizer, messages, [0], truncation_side="Left"),
    ):
        with pytest.raises(ValueError, match="truncation_side must be 'left' or 'right'"):
            make()
    for steps in ([-1], [1]):
        with pytest.raises(ValueError, match=r"out of range for a trajectory of 1 assistant steps"):
            label_trajectory(smol_tokenizer, messages, steps)
    with pytest.raises(ValueError, match=r"Row 1 of the batch: field 'critical_steps' is missing"):
        CriticalStepDataCollator(smol_tokenizer)(
            [{"messages": messages, "critical_steps": [0]}, {"messages": messages}]
        )


def test_empty_tools_are_no_tools():
    from atlas_hf.training.chat_template import parse_tools

    assert [parse_tools(t) for t in (None, "", " ", "[]", [], ())] == [None] * 6
    assert parse_tools('[{"type": "function"}]') == parse_tools(({"type": "function"},)) == [{"type": "function"}]
