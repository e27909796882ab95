"""AtlasSFTTrainer: the same loss and gradients as the naive way, cheaper; the selections; the counts."""

from __future__ import annotations

import random

import pytest
import torch
from datasets import Dataset
from peft import LoraConfig
from transformers import LlamaConfig, LlamaForCausalLM

from atlas_hf.training.selection import select_steps
from atlas_hf.trajectories.schema import check_messages, row_seed
from atlas_hf.training.chat_template import prepare_messages
from atlas_hf.training.labeller import IGNORE_INDEX
from atlas_hf.training.trainer import AtlasSFTConfig, AtlasSFTTrainer, supports_padding_free
from conftest import read_fireact


def tiny_model(tokenizer, seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        attn_implementation="sdpa",
    )
    return LlamaForCausalLM(config)


def config(tmp_path, **kwargs) -> AtlasSFTConfig:
    defaults = dict(bf16=False, report_to="none", use_cpu=True, per_device_train_batch_size=4, save_strategy="no")
    return AtlasSFTConfig(str(tmp_path / "out"), **{**defaults, **kwargs})


def annotated_rows(n: int) -> list[dict]:
    """Real HotpotQA trajectories with a fixed annotation: the first and the last step are critical,
    and one row in four has none (nothing to learn from it under step_selection='critical')."""
    rows = []
    for i, row in enumerate(read_fireact(n)):
        steps = sum(m["role"] == "assistant" for m in row["messages"])
        critical = [] if i % 4 == 3 else sorted({0, steps - 1})
        rows.append({"messages": row["messages"], "critical_steps": critical})
    return rows


def naive_batch(tokenizer, trainer: AtlasSFTTrainer, rows: list[dict]) -> dict[str, torch.Tensor]:
    """The naive way: the whole trajectory tokenized, the same labels, right-padded, no truncation."""
    ids, labels = [], []
    for i, row in enumerate(rows):
        text = tokenizer.apply_chat_template(
            prepare_messages(tokenizer, check_messages(row["messages"])).messages, tokenize=False
        )
        full = tokenizer(text, add_special_tokens=False)["input_ids"]
        cut = trainer.train_dataset[i]
        assert full[: len(cut["input_ids"])] == cut["input_ids"], "the trainer's row is not a prefix of the whole"
        ids.append(full)
        labels.append(cut["labels"] + [IGNORE_INDEX] * (len(full) - len(cut["labels"])))
    length = max(map(len, ids))
    batch = {
        "input_ids": torch.tensor([x + [tokenizer.pad_token_id] * (length - len(x)) for x in ids]),
        "attention_mask": torch.tensor([[1] * len(x) + [0] * (length - len(x)) for x in ids]),
        "labels": torch.tensor([x + [IGNORE_INDEX] * (length - len(x)) for x in labels]),
    }
    return batch


def trainable_grads(model) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad and p.grad is not None}


@pytest.mark.parametrize(
    "peft, padding_free, supervised_only_head",
    [(False, False, True), (True, False, True), (False, True, True), (False, False, False)],
    ids=["full", "lora", "padding-free", "trl-head"],
)
def test_loss_and_gradients_equal_the_naive_way(tmp_path, smol_tokenizer, peft, padding_free, supervised_only_head):
    rows = [r for r in annotated_rows(8) if r["critical_steps"]][:4]
    peft_config = (
        LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False) if peft else None
    )
    trainer = AtlasSFTTrainer(
        tiny_model(smol_tokenizer),
        args=config(tmp_path, padding_free=padding_free, supervised_only_head=supervised_only_head),
        train_dataset=Dataset.from_list(rows),
        processing_class=smol_tokenizer,
        peft_config=peft_config,
    )
    assert trainer.supervised_only_head is supervised_only_head
    model = trainer.model
    model.train()
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(len(rows))])
    assert ("position_ids" in batch) is padding_free
    naive = naive_batch(smol_tokenizer, trainer, rows)
    # The trainer's batch is shorter: it stops after the last supervised token of the longest row.
    assert (batch["input_ids"].numel() if padding_free else batch["input_ids"].shape[1]) < naive[
        "attention_mask"
    ].sum()
    num_items = int((naive["labels"][:, 1:] != IGNORE_INDEX).sum())

    for items in (None, num_items + 7):  # TRL's own normalisation, and a count gathered over accumulation
        model.zero_grad()
        loss = trainer.compute_loss(model, dict(batch), num_items_in_batch=items)
        loss.backward()
        grads = trainable_grads(model)
        model.zero_grad()
        expected = model(**naive).loss if items is None else _summed_nll(model, naive) / items
        expected.backward()
        expected_grads = trainable_grads(model)
        torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-6)
        assert grads.keys() == expected_grads.keys() and grads
        if peft:
            assert all("lora" in name for name in grads)
        for name in grads:
            torch.testing.assert_close(grads[name], expected_grads[name], rtol=1e-4, atol=1e-6, msg=name)
    assert trainer._metrics["train"]["mean_token_accuracy"] and trainer._metrics["train"]["entropy"]
    assert 0 < trainer._metrics["train"]["supervised_fraction"][-1] < 1


def _summed_nll(model, batch) -> torch.Tensor:
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1].float()
    return torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.size(-1)),
        batch["labels"][:, 1:].reshape(-1),
        ignore_index=IGNORE_INDEX,
        reduction="sum",
    )


def labelled_spans(labels: list[int]) -> list[tuple[int, int]]:
    spans, start = [], None
    for i, label in enumerate(labels + [IGNORE_INDEX]):
        if label != IGNORE_INDEX and start is None:
            start = i
        elif label == IGNORE_INDEX and start is not None:
            spans.append((start, i))
            start = None
    return spans


@pytest.mark.parametrize("selection", ["critical", "all", "random", "non_critical"])
def test_step_selection_labels_the_selected_turns(tmp_path, smol_tokenizer, selection):
    rows = annotated_rows(8)
    trainer = AtlasSFTTrainer(
        tiny_model(smol_tokenizer),
        args=config(tmp_path, step_selection=selection, selection_ratio=0.5, selection_seed=3),
        train_dataset=Dataset.from_list(rows),
        processing_class=smol_tokenizer,
    )
    kept = iter(trainer.train_dataset)
    for row in rows:
        turns = [m["content"] for m in row["messages"] if m["role"] == "assistant"]
        rng = random.Random(row_seed(3, row["messages"]))
        expected = select_steps(len(turns), row["critical_steps"], selection, 0.5, rng)
        if not expected:
            continue  # skipped: checked in test_unsupervised_rows_are_skipped_and_counted
        tokenized = next(kept)
        spans = labelled_spans(tokenized["labels"])
        assert len(spans) == len(expected), (selection, expected)
        for (start, end), step in zip(spans, expected):
            text = smol_tokenizer.decode(tokenized["labels"][start:end])
            assert text.strip() == turns[step].strip() + "<|im_end|>"
        assert tokenized["labels"][-1] != IGNORE_INDEX  # cut right after the last supervised token
    assert next(kept, None) is None


def test_unsupervised_rows_are_skipped_and_counted(tmp_path, smol_tokenizer):
    rows = annotated_rows(12)
    empty = sum(not r["critical_steps"] for r in rows)
    assert empty == 3
    trainer = AtlasSFTTrainer(
        tiny_model(smol_tokenizer),
        args=config(tmp_path),
        train_dataset=Dataset.from_list(rows),
        processing_class=smol_tokenizer,
    )
    assert len(trainer.train_dataset) == len(rows) - empty
    summary = trainer.atlas_summary()
    labels = trainer.train_dataset["labels"]
    assert summary["skipped_rows"] == empty and summary["rows"] == len(rows) - empty
    assert summary["supervised_tokens"] == sum(sum(t != IGNORE_INDEX for t in row) for row in labels)
    assert summary["total_tokens"] == sum(map(len, labels))
    assert summary["final_loss"] is None and summary["step_selection"] == "critical"

    kept = AtlasSFTTrainer(
        tiny_model(smol_tokenizer),
        args=config(tmp_path, skip_unsupervised_rows=False),
        train_dataset=Dataset.from_list(rows),
        processing_class=smol_tokenizer,
    )
    assert len(kept.train_dataset) == len(rows) and kept.atlas_summary()["skipped_rows"] == 0


def test_pretokenized_rows_pass_through(tmp_path, smol_tokenizer):
    rows = [
        {"input_ids": [1, 2, 3, 4, 5], "labels": [-100, -100, 3, 4, -100]},
        {"input_ids": [6, 7, 8], "labels": [-100, -100, -100]},
    ]
    trainer = AtlasSFTTrainer(
        tiny_model(smol_tokenizer),
        args=config(tmp_path),
        train_dataset=Dataset.from_list(rows),
        processing_class=smol_tokenizer,
    )
    # cut after the last labelled token (it carries no loss), the unsupervised row skipped
    assert trainer.train_dataset.to_list() == [{"input_ids": [1, 2, 3, 4], "labels": [-100, -100, 3, 4]}]
    assert trainer.atlas_summary()["skipped_rows"] == 1
    # max_length holds for rows that come tokenized too, stats included
    short = AtlasSFTTrainer(
        tiny_model(smol_tokenizer),
        args=config(tmp_path, max_length=3),
        train_dataset=Dataset.from_list(rows),
        processing_class=smol_tokenizer,
    )
    assert short.train_dataset.to_list() == [{"input_ids": [2, 3, 4], "labels": [-100, 3, 4]}]
    assert short.atlas_summary()["total_tokens"] == 3
    with pytest.raises(ValueError, match="no 'labels'"):
        AtlasSFTTrainer(
            tiny_model(smol_tokenizer),
            args=config(tmp_path),
            processing_class=smol_tokenizer,
            train_dataset=Dataset.from_list([{"input_ids": [1, 2]}]),
        )


def test_train_lowers_the_loss_and_summarises(tmp_path, smol_tokenizer):
    rows = [r for r in annotated_rows(4) if r["critical_steps"]][:2] * 4
    trainer = AtlasSFTTrainer(
        tiny_model(smol_tokenizer),
        args=config(
            tmp_path,
            learning_rate=1e-2,
            num_train_epochs=6,
            logging_steps=1,
            lr_scheduler_type="constant",
            gradient_checkpointing=False,
        ),
        train_dataset=Dataset.from_list(rows),
        processing_class=smol_tokenizer,
    )
    trainer.train()
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    assert len(losses) == 12
    assert losses[-1] < 0.7 * losses[0], losses
    summary = trainer.atlas_summary()
    assert summary["final_loss"] == pytest.approx(losses[-1])
    assert summary["epochs"] == pytest.approx(6)
    assert all("supervised_fraction" in e for e in trainer.state.log_history if "loss" in e)


def test_config_validation_and_padding_free_support(tmp_path):
    assert supports_padding_free("flash_attention_2") and supports_padding_free("kernels-community/flash-attn3")
    assert not supports_padding_free("sdpa") and not supports_padding_free("eager") and not supports_padding_free(None)
    with pytest.raises(ValueError, match="step_selection"):
        config(tmp_path, step_selection="perplexity_top")
    with pytest.raises(ValueError, match="selection_ratio"):
        config(tmp_path, selection_ratio=0.0)
    assert config(tmp_path).dataset_kwargs["skip_prepare_dataset"] is True
    assert config(tmp_path, truncation_mode="keep_end").truncation_side == "left"  # TRL's name for the same cut
    with pytest.raises(ValueError, match="truncation_mode='keep_end'.*truncation_side='right'"):
        config(tmp_path, truncation_mode="keep_end", truncation_side="right")


def test_the_config_never_prints_the_hub_token(tmp_path):
    token = "hf_" + "Qw3e" * 9
    config = AtlasSFTConfig(str(tmp_path), hub_token=token, report_to=[], use_cpu=True)
    assert token not in repr(config) and token not in str(config) and "<HUB_TOKEN>" in repr(config)
    assert "step_selection='critical'" in repr(config) or "step_selection=critical" in repr(config)


def test_save_model_writes_the_atlas_card_and_keeps_the_users_config(tmp_path, smol_tokenizer):
    from huggingface_hub import ModelCard

    args = config(tmp_path, max_steps=1, save_strategy="no")
    assert args.padding_free is None
    trainer = AtlasSFTTrainer(
        tiny_model(smol_tokenizer),
        args=args,
        train_dataset=Dataset.from_list(annotated_rows(2)),
        processing_class=smol_tokenizer,
        peft_config=LoraConfig(r=2, target_modules=["q_proj"]),
    )
    assert args.padding_free is None and trainer.padding_free is False  # resolved on the trainer, not on the config
    trainer.train()
    trainer.save_model(str(tmp_path / "adapter"))
    card = ModelCard.load(tmp_path / "adapter" / "README.md")  # not PEFT's blank "Model Card for Model ID"
    assert card.data.library_name == "peft" and "atlas" in card.data.tags
    assert "| Step selection | critical |" in card.text and "@inproceedings{chen2025atlas" in card.text
    trainer.save_model()  # into output_dir
    trainer.create_model_card(tags=["my-agent"])  # TRL's signature: the user's tags are kept
    card = ModelCard.load(tmp_path / "out" / "README.md")
    assert {"my-agent", "atlas"} <= set(card.data.tags)
    assert trainer._paper["id"] == "2503.02197"


def test_a_stream_is_labelled_as_it_is_read_like_a_dataset(tmp_path, smol_tokenizer):
    from atlas_hf.training.dataset_labelling import label_dataset

    rows = Dataset.from_list(annotated_rows(8))
    args = config(tmp_path, max_steps=2)
    eager, eager_stats = label_dataset(rows, smol_tokenizer, args)
    stream, stream_stats = label_dataset(rows.to_iterable_dataset(), smol_tokenizer, args)
    assert stream_stats.rows == 0  # nothing is read yet
    assert list(stream) == list(eager)  # the same labels, the unsupervised rows dropped alike
    assert (
        stream_stats.rows,
        stream_stats.skipped_rows,
        stream_stats.supervised_tokens,
        stream_stats.total_tokens,
    ) == (eager_stats.rows, eager_stats.skipped_rows, eager_stats.supervised_tokens, eager_stats.total_tokens)
    trainer = AtlasSFTTrainer(
        tiny_model(smol_tokenizer),
        args=args,
        train_dataset=rows.to_iterable_dataset(),
        processing_class=smol_tokenizer,
    )
    trainer.train()
    summary = trainer.atlas_summary()
    assert summary["rows"] > 0 and summary["supervised_tokens"] > 0 and summary["final_loss"] is not None


@pytest.mark.parametrize("selection", ["random", "non_critical"])
def test_the_baselines_select_at_the_cap_the_annotation_recorded(tmp_path, smol_tokenizer, selection):
    """Annotated at max_ratio=0.5, the baselines supervise half the steps unless told another ratio;
    the count comes from the labels (one labelled run per supervised turn)."""
    from atlas_hf import RandomOracle, annotate_dataset

    rows = [{"messages": row["messages"]} for row in read_fireact(8)]
    annotated, _ = annotate_dataset(Dataset.from_list(rows), RandomOracle(seed=1), max_ratio=0.5)
    assert set(annotated["atlas_oracle"]) == {"random(seed=1, max_ratio=0.5)"}
    for given, expected_ratio in ((None, 0.5), (0.3, 0.3)):
        trainer = AtlasSFTTrainer(
            tiny_model(smol_tokenizer),
            args=config(tmp_path / str(given), step_selection=selection, selection_ratio=given),
            train_dataset=annotated,
            processing_class=smol_tokenizer,
        )
        expected_counts = []
        for row in annotated:
            steps = sum(m["role"] == "assistant" for m in row["messages"])
            want = max(1, int(steps * expected_ratio + 1e-9))
            if selection == "non_critical":
                want = min(want, steps - len(row["critical_steps"]))
            if want:
                expected_counts.append(want)
        counts = [len(labelled_spans(row["labels"])) for row in trainer.train_dataset]
        assert counts == expected_counts, (given, counts, expected_counts)
        assert trainer.atlas_summary()["selection_ratio"] == expected_ratio
        # a stream labels the same rows, and reports the ratio it used once its rows are read
        from atlas_hf.training.dataset_labelling import label_dataset

        stream, stats = label_dataset(annotated.to_iterable_dataset(), smol_tokenizer, trainer.args)
        assert [len(labelled_spans(row["labels"])) for row in stream] == expected_counts
        assert stats.selection_ratios == (expected_ratio,)
