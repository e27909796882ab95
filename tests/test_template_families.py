"""Exact labels on every real chat template TRL ships, against an independent truth (`template_corpus`)."""

from __future__ import annotations

import json
import random

import pytest
import torch
from datasets import Dataset
from transformers import LlamaConfig, LlamaForCausalLM
from trl import SFTConfig, SFTTrainer

from atlas_hf import (
    AtlasSFTConfig,
    AtlasSFTTrainer,
    CriticalStepDataCollator,
    CriticalStepLabeller,
    normalize_trajectories,
)
from atlas_hf.training.chat_template import prepare_messages, template_profile, trl_template_dir
from atlas_hf.errors import AtlasError, TemplateError, TrajectoryError
from atlas_hf.trajectories.schema import check_messages
from atlas_hf.training.labeller import IGNORE_INDEX

from conftest import read_fireact, read_tau_bench
from template_corpus import (
    ORIGINALS,
    SYNTHETIC,
    family_tokenizer,
    labelled_segments,
    reference_labels,
    reference_template,
    sample_steps,
)

TRAINED_ON = ["qwen3", "qwen3_5_think", "gemma4", "gptoss", "glm4moe", "phi3"]


@pytest.fixture(scope="module")
def family(smol_tokenizer):
    cache: dict = {}

    def get(name: str):
        if name not in cache:
            cache[name] = family_tokenizer(smol_tokenizer, name)
        return cache[name]

    return get


def check_row(tokenizer, row: dict, index) -> str:
    """Label one row and compare it with the truth; returns 'exact' or 'refused'."""
    try:
        messages = prepare_messages(tokenizer, check_messages(row["messages"], index), row=index).messages
        truth = reference_labels(tokenizer, messages, row["critical_steps"])
    except AtlasError:
        truth = None
    except Exception:  # TRL's own rendering cannot take the row: atlas_hf must refuse it clearly
        truth = None
    if truth is None:
        with pytest.raises(AtlasError, match=f"Row {index}"):
            CriticalStepLabeller(tokenizer).label_row(row, index)
        return "refused"
    out = CriticalStepLabeller(tokenizer).label_row(row, index)
    assert (out.input_ids, out.labels) == truth, (
        index,
        labelled_segments(tokenizer, out.input_ids, out.labels)[:3],
        labelled_segments(tokenizer, *truth)[:3],
    )
    turns = [m for m in row["messages"] if m["role"] == "assistant"]
    found = labelled_segments(tokenizer, out.input_ids, out.labels)
    assert len(found) == len(row["critical_steps"])
    for text, step in zip(found, row["critical_steps"]):  # the decoded labels hold the turn's own text
        turn = turns[step]
        for call in turn.get("tool_calls") or []:
            assert call["function"]["name"] in text
        if not turn.get("tool_calls") and turn.get("content"):
            assert turn["content"].strip()[-40:] in text
    return "exact"


def test_the_private_details_relied_on_still_hold(smol_tokenizer):
    """TRL's template folder, and transformers' tracking of `{% generation %}` blocks (`_render_tracked`)."""
    from atlas_hf.training.turn_spans import _render_tracked

    assert (trl_template_dir() / "qwen3.jinja").is_file() and (trl_template_dir() / "qwen3_training.jinja").is_file()
    tokenizer = family_tokenizer(smol_tokenizer, "qwen3")
    chat = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    full, blocks = _render_tracked(tokenizer, chat, None, template_profile(tokenizer).template)
    assert len(blocks) == 1 and full[blocks[0][0] : blocks[0][1]].startswith("<think>")
    assert full[blocks[0][0] : blocks[0][1]].rstrip().endswith("hello<|im_end|>")


@pytest.mark.parametrize("name", ORIGINALS)
def test_the_template_rendered_is_trls_training_version(family, name):
    tokenizer = family(name)
    assert template_profile(tokenizer).template == reference_template(tokenizer)[0]
    assert template_profile(tokenizer).family == name


@pytest.mark.parametrize("name", ORIGINALS)
def test_synthetic_rows_label_exactly_on_every_template(family, name):
    tokenizer = family(name)
    rng = random.Random(name)
    for k, row in enumerate(SYNTHETIC):
        chat = row["messages"]
        for steps in ([sample_steps(chat, rng)], [list(range(sum(m["role"] == "assistant" for m in chat)))])[0] + [
            list(range(sum(m["role"] == "assistant" for m in chat)))
        ]:
            check_row(tokenizer, {"messages": chat, "critical_steps": steps}, k)


@pytest.fixture(scope="module")
def real_rows():
    rng = random.Random(7)
    chats = [r["messages"] for r in read_fireact(3)] + [r["traj"] for r in read_tau_bench(60)[::15]]
    return [{"messages": chat, "critical_steps": sample_steps(chat, rng)} for chat in chats]


@pytest.mark.parametrize("name", ORIGINALS)
def test_real_rows_label_exactly_on_every_template(family, real_rows, name):
    tokenizer = family(name)
    outcomes = [check_row(tokenizer, row, i) for i, row in enumerate(real_rows)]
    assert outcomes.count("exact") == len(real_rows)  # every real row is single-call: none is refused


def test_arguments_become_mappings_and_bad_json_names_the_row_and_field():
    rows = [
        {
            "messages": [
                {"role": "user", "content": "go"},
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {"id": "a", "type": "function", "function": {"name": "f", "arguments": '{"x": [1, 2]}'}}
                    ],
                },
                {"role": "tool", "tool_call_id": "a", "content": "ok"},
                {"role": "assistant", "content": "done"},
            ]
        }
    ]
    out = normalize_trajectories(Dataset.from_list(rows))
    assert out[0]["messages"][1]["tool_calls"][0]["function"]["arguments"] == {"x": [1, 2]}
    bad = json.loads(json.dumps(rows))
    bad[0]["messages"][1]["tool_calls"][0]["function"]["arguments"] = '{"x": '
    with pytest.raises(TrajectoryError, match=r"Row 0, field `messages\[1\].tool_calls\[0\].function.arguments`"):
        check_messages(bad[0]["messages"], 0)


def test_parallel_calls_on_a_single_call_template_name_the_row_and_turn(family):
    tokenizer = family("llama3_1")
    row = {"messages": SYNTHETIC[0]["messages"], "critical_steps": [0]}
    with pytest.raises(TemplateError, match=r"Row 5, turn 2: the llama3_1 chat template takes one tool call per turn"):
        CriticalStepLabeller(tokenizer).label_row(row, 5)


def test_rewrites_are_counted_and_fit_template_false_refuses(family):
    tokenizer = family("gemma")  # no system role, no tool role, no tool calls
    row = {"messages": SYNTHETIC[0]["messages"][:1] + SYNTHETIC[2]["messages"], "critical_steps": [1]}
    out = CriticalStepLabeller(tokenizer).label_row(row, 3)
    assert out.num_rewritten_turns == 1
    text = tokenizer.decode(out.input_ids)
    assert "<start_of_turn>user\nYou are a travel agent. Use the tools.\n\nQuestion: which river" in text
    with pytest.raises(TemplateError, match=r"Row 3, turn 0: the gemma chat template has no system role"):
        CriticalStepLabeller(tokenizer, fit_template=False).label_row(row, 3)


def tiny_model(vocab_size: int) -> LlamaForCausalLM:
    torch.manual_seed(0)
    return LlamaForCausalLM(
        LlamaConfig(
            vocab_size=vocab_size,
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=1,
            max_position_embeddings=4096,
        )
    )


def captured_labels(trainer) -> list[list[int]]:
    seen: list[list[int]] = []

    def hook(module, args, kwargs):
        mask = kwargs.get("attention_mask")
        labels = kwargs["labels"]
        rows = range(labels.shape[0])
        seen.extend(labels[i][mask[i].bool()].tolist() if mask is not None else labels[i].tolist() for i in rows)

    trainer.model.register_forward_pre_hook(hook, with_kwargs=True)
    trainer.train()
    return seen


@pytest.mark.slow
@pytest.mark.parametrize("name", TRAINED_ON)
def test_stock_sfttrainer_and_atlas_trainer_train_on_the_truth(family, name, tmp_path):
    tokenizer = family(name)
    data = [{"messages": row["messages"], "critical_steps": steps} for row in SYNTHETIC[1:] for steps in ([0], [1])]
    truth = [
        reference_labels(
            tokenizer, prepare_messages(tokenizer, check_messages(r["messages"])).messages, r["critical_steps"]
        )[1]
        for r in data
    ]
    common = dict(
        output_dir=str(tmp_path),
        per_device_train_batch_size=len(data),
        max_steps=1,
        report_to=[],
        use_cpu=True,
        bf16=False,
        save_strategy="no",
        shuffle_dataset=False,
    )
    stock = SFTTrainer(
        model=tiny_model(len(tokenizer)),
        processing_class=tokenizer,
        train_dataset=Dataset.from_list(data),
        args=SFTConfig(remove_unused_columns=False, dataset_kwargs={"skip_prepare_dataset": True}, **common),
        data_collator=CriticalStepDataCollator(tokenizer),
    )
    assert sorted(captured_labels(stock)) == sorted(truth)
    atlas = AtlasSFTTrainer(
        tiny_model(len(tokenizer)),
        args=AtlasSFTConfig(supervised_only_head=False, **common),
        train_dataset=Dataset.from_list(data),
        processing_class=tokenizer,
    )
    assert sorted(atlas.train_dataset["labels"]) == sorted(truth)
    assert atlas.train()


@pytest.mark.parametrize("name", ["gemma", "phi3", "qwen3", "gptoss", "llama3_1", "glm4moe", "deepseekv3"])
def test_rollouts_render_the_conversation_as_training_did(family, name):
    """`TransformersPolicy`'s prompt is the labelled row's tokens up to where the model starts writing."""
    from atlas_hf.evaluation.policy import TransformersPolicy

    tokenizer = family(name)
    conversation = [
        {"role": "system", "content": "You are in a maze."},
        {"role": "user", "content": "Goal: the door."},
        {"role": "assistant", "content": "Thought: go on.\nAction: forward"},
        {"role": "user", "content": "You see a wall."},
    ]
    row = {"messages": conversation + [{"role": "assistant", "content": "Action: left"}], "critical_steps": [1]}
    out = CriticalStepLabeller(tokenizer).label_row(row)
    first = next(k for k, label in enumerate(out.labels) if label != IGNORE_INDEX)
    policy = TransformersPolicy(tiny_model(len(tokenizer)), tokenizer)
    assert policy._prompt_ids(conversation) == out.input_ids[:first]
    assert out.input_ids[-1] in policy.stop_ids  # the token that ends a trained turn stops a rollout
