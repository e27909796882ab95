"""The two documented ways to use atlas_hf's labels with stock TRL, checked on what the model receives."""

from __future__ import annotations

import random

import torch
from datasets import Dataset
from transformers import LlamaConfig, LlamaForCausalLM
from trl import SFTConfig, SFTTrainer

from atlas_hf.training.collator import CriticalStepDataCollator
from atlas_hf.training.labeller import CriticalStepLabeller

from conftest import read_fireact


def tiny_model(vocab_size: int) -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
    )
    return LlamaForCausalLM(config)


def rows(n: int = 8) -> list[dict]:
    rng = random.Random(1)
    out = []
    for row in read_fireact(n):
        steps = sum(m["role"] == "assistant" for m in row["messages"])
        out.append({"messages": row["messages"], "critical_steps": [rng.randrange(steps)]})
    return out


def train_and_capture(trainer: SFTTrainer) -> list[dict[str, torch.Tensor]]:
    seen: list[dict[str, torch.Tensor]] = []
    trainer.model.register_forward_pre_hook(
        lambda module, args, kwargs: seen.append({k: v.clone() for k, v in kwargs.items() if torch.is_tensor(v)}),
        with_kwargs=True,
    )
    trainer.train()
    return seen


def config(tmp_path, **kwargs) -> SFTConfig:
    return SFTConfig(
        output_dir=str(tmp_path),
        per_device_train_batch_size=4,
        max_steps=2,
        report_to=[],
        use_cpu=True,
        bf16=False,
        logging_steps=1,
        save_strategy="no",
        **kwargs,
    )


def expected_labels(tokenizer, data: list[dict]) -> list[list[int]]:
    return [row.labels for row in CriticalStepLabeller(tokenizer).label_rows(data)]


def batch_rows(batch: dict[str, torch.Tensor]) -> list[list[int]]:
    """The labels of each row of a right-padded batch, padding removed."""
    mask = batch["attention_mask"].bool()
    return [batch["labels"][i][mask[i]].tolist() for i in range(len(mask))]


def test_raw_rows_with_skip_prepare_dataset(smol_tokenizer, tmp_path):
    data = rows()
    trainer = SFTTrainer(
        model=tiny_model(len(smol_tokenizer)),
        args=config(tmp_path, remove_unused_columns=False, dataset_kwargs={"skip_prepare_dataset": True}),
        train_dataset=Dataset.from_list(data),
        processing_class=smol_tokenizer,
        data_collator=CriticalStepDataCollator(smol_tokenizer),
    )
    seen = train_and_capture(trainer)
    expected = expected_labels(smol_tokenizer, data)
    got = [labels for batch in seen for labels in batch_rows(batch)]
    assert len(got) == 8
    assert sorted(got) == sorted(expected)  # the sampler shuffles; every row is seen once
    assert trainer.state.log_history[0]["loss"] > 0


def test_pretokenized_rows_with_trls_default_collator(smol_tokenizer, tmp_path):
    data = rows()
    tokenized = Dataset.from_list(data).map(
        CriticalStepLabeller(smol_tokenizer), batched=True, remove_columns=["messages", "critical_steps"]
    )
    trainer = SFTTrainer(
        model=tiny_model(len(smol_tokenizer)),
        args=config(tmp_path),
        train_dataset=tokenized,
        processing_class=smol_tokenizer,
    )
    assert type(trainer.data_collator).__name__ == "DataCollatorForLanguageModeling"
    seen = train_and_capture(trainer)
    got = [labels for batch in seen for labels in batch_rows(batch)]
    assert sorted(got) == sorted(expected_labels(smol_tokenizer, data))
    supervised = sum(int((batch["labels"] != -100).sum()) for batch in seen)
    assert supervised == sum(tokenized["num_supervised"])
