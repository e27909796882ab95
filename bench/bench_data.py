"""Benchmarks 1 and 2 of issue 2: tokenize + label, and collate, against TRL on the same rows.

    .venv/bin/python bench/bench_data.py [--repeats 5]

1. rows/s of atlas_hf's pre-tokenizing map (`CriticalStepLabeller`) vs TRL's own
   `SFTTrainer._prepare_dataset` (full-trajectory SFT, the same template) vs the raw tokenizer on
   the already rendered text (the limit: no rendering, no labels);
2. batches/s of `CriticalStepDataCollator` on pre-tokenized rows vs TRL's
   `DataCollatorForLanguageModeling` on the same rows.
All on both files of ../shared/data, with the SmolLM2-135M-Instruct tokenizer, medians of --repeats.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))

from common import median_time, real_trajectories, write_results  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args()

    import datasets
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM
    from trl import SFTConfig, SFTTrainer
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    from atlas_hf.training.collator import CriticalStepDataCollator
    from atlas_hf.models import load_default_tokenizer
    from atlas_hf.training.chat_template import prepare_messages
    from atlas_hf.trajectories.schema import check_messages
    from atlas_hf.training.labeller import CriticalStepLabeller

    datasets.disable_progress_bars()
    logging.getLogger("atlas_hf").setLevel(logging.ERROR)
    tokenizer = load_default_tokenizer()
    rows = real_trajectories()
    # TRL's SmolLM2 rendering cannot take `content: None` nor keeps tool calls: both sides get the
    # same prepared messages, so they tokenize the same text.
    for row in rows:
        row["messages"] = prepare_messages(tokenizer, check_messages(row["messages"])).messages
    dataset = datasets.Dataset.from_list(rows)
    n = len(dataset)

    labeller = CriticalStepLabeller(tokenizer)
    atlas_s = median_time(lambda: dataset.map(labeller, batched=True, load_from_cache_file=False), args.repeats)

    tiny = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=2,
        )
    )
    config = SFTConfig(output_dir="/tmp/atlas_bench_trl", report_to=[], max_length=None, bf16=False, use_cpu=True)
    trainer = SFTTrainer(model=tiny, args=config, train_dataset=dataset.select(range(2)), processing_class=tokenizer)
    trl_s = median_time(
        lambda: trainer._prepare_dataset(dataset, tokenizer, config, False, None, "bench"), args.repeats
    )
    texts = [tokenizer.apply_chat_template(r["messages"], tokenize=False) for r in rows]
    raw_s = median_time(lambda: tokenizer(texts, add_special_tokens=False), args.repeats)

    tokenized = dataset.map(labeller, batched=True, remove_columns=dataset.column_names)
    features = [{"input_ids": r["input_ids"], "labels": r["labels"]} for r in tokenized]
    batches = [features[i : i + args.batch_size] for i in range(0, n, args.batch_size)]
    ours = CriticalStepDataCollator(tokenizer)
    theirs = DataCollatorForLanguageModeling(pad_token_id=tokenizer.pad_token_id)
    for batch in batches[:2]:  # same output, checked before timing
        a, b = ours(batch), theirs(batch)
        assert torch.equal(a["input_ids"], b["input_ids"]) and torch.equal(a["labels"], b["labels"])
    collate_ours = median_time(lambda: [ours(b) for b in batches], args.repeats)
    collate_trl = median_time(lambda: [theirs(b) for b in batches], args.repeats)

    results = {
        "rows": n,
        "tokenize_rows_per_s": {"atlas_hf": n / atlas_s, "trl_prepare_dataset": n / trl_s, "raw_tokenizer": n / raw_s},
        "tokenize_ratio_vs_trl": trl_s / atlas_s,
        "tokenize_ratio_vs_raw": raw_s / atlas_s,
        "collate_batches_per_s": {"atlas_hf": len(batches) / collate_ours, "trl": len(batches) / collate_trl},
        "collate_ratio_vs_trl": collate_trl / collate_ours,
        "repeats": args.repeats,
        "batch_size": args.batch_size,
    }
    path = write_results("data", results)
    t, c = results["tokenize_rows_per_s"], results["collate_batches_per_s"]
    print(f"rows: {n} (fireact + tau-bench), medians of {args.repeats}")
    print(
        f"tokenize+label rows/s  atlas_hf {t['atlas_hf']:9.0f}   TRL _prepare_dataset {t['trl_prepare_dataset']:9.0f}"
        f"   raw tokenizer {t['raw_tokenizer']:9.0f}"
    )
    print(
        f"  atlas_hf / TRL = {results['tokenize_ratio_vs_trl']:.2f}x   "
        f"atlas_hf / raw = {results['tokenize_ratio_vs_raw']:.2f}x"
    )
    print(
        f"collate batches/s      atlas_hf {c['atlas_hf']:9.0f}   TRL collator {c['trl']:9.0f}"
        f"   atlas_hf / TRL = {results['collate_ratio_vs_trl']:.2f}x"
    )
    print(f"written to {path}")


if __name__ == "__main__":
    main()
