"""Benchmark 3: wall time per epoch and peak memory of training on the critical steps.

Three configurations, on the same data, model, LoRA adapter and seed, in one run:

- `atlas_critical`: `AtlasSFTTrainer` at step_selection="critical" (rows cut after their last
  supervised token, LM head and loss only at supervised positions);
- `naive_critical`: stock `trl.SFTTrainer` given the same labels the naive way (the whole trajectory
  pre-tokenized as `input_ids` + `labels`, no cut, TRL's default collator and fused head);
- `atlas_all`: `AtlasSFTTrainer` at step_selection="all" (full-trajectory SFT).

Data: the first trajectories of ../shared/data/fireact/hotpotqa.jsonl and of
../shared/data/tau-bench/gpt-4o-airline.json (tau-bench trajectories are cut, at a turn boundary,
to their longest prefix ending with an assistant turn that fits in `--max-length` tokens, so no
trainer truncates anything and the two critical configurations see exactly the same tokens).
Critical steps: `RandomOracle(seed=0)` at ratio 0.3 stands in for an LLM oracle (no network here);
the cost depends only on which positions are supervised, not on why.

Each (configuration, repeat) runs in a fresh subprocess, interleaved across repeats, and reports the
wall time of `trainer.train()` for one epoch and the peak resident memory (`ru_maxrss`). The table
shows medians; the JSON (bench/results/train.json) keeps every run.

    .venv/bin/python bench/bench_train.py                # defaults: 16 + 2 trajectories, 3 repeats
    .venv/bin/python bench/bench_train.py --fireact 64 --tau 8 --repeats 5
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
CONFIGS = ("atlas_critical", "naive_critical", "atlas_all")
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def _render_length(tokenizer: Any, messages: list[dict[str, Any]]) -> tuple[list[int], str]:
    from atlas_hf.training.chat_template import prepare_messages, render_chat, training_template
    from atlas_hf.trajectories.schema import check_messages

    prepared = prepare_messages(tokenizer, check_messages(messages)).messages
    text = render_chat(tokenizer, prepared, None, False, training_template(tokenizer))
    return tokenizer(text, add_special_tokens=False)["input_ids"], text


def _fit_prefix(tokenizer: Any, messages: list[dict[str, Any]], max_length: int) -> list[dict[str, Any]] | None:
    """The longest prefix ending with an assistant turn whose rendering fits in `max_length` tokens."""
    best = None
    for end, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        if len(_render_length(tokenizer, messages[: end + 1])[0]) > max_length:
            break
        best = messages[: end + 1]
    return best


def build_sample(args: argparse.Namespace, tokenizer: Any) -> list[dict[str, Any]]:
    """Trajectories (`messages`, `critical_steps`, `source`) from both files."""
    from datasets import Dataset

    from atlas_hf.annotation.oracles.baselines import RandomOracle
    from atlas_hf.trajectories.normalize import normalize_trajectories

    fireact_file, tau_file = DATA / "fireact" / "hotpotqa.jsonl", DATA / "tau-bench" / "gpt-4o-airline.json"
    for path in (fireact_file, tau_file):
        if not path.exists():
            sys.exit(f"bench_train: data file {path} not found; this benchmark needs ../shared/data beside the repo.")
    with fireact_file.open() as f:
        fireact = [json.loads(line) for line in f if line.strip()][: args.fireact]
    tau_raw = json.loads(tau_file.read_text())
    tau = normalize_trajectories(Dataset.from_list(tau_raw[: max(4 * args.tau, 8)]))["messages"]
    rows = [{"messages": r["messages"], "source": "fireact"} for r in fireact]
    for messages in tau:
        if sum(r["source"] == "tau-bench" for r in rows) == args.tau:
            break
        messages = [{k: v for k, v in m.items() if v is not None} for m in messages]
        prefix = _fit_prefix(tokenizer, messages, args.max_length)
        if prefix is not None and sum(m["role"] == "assistant" for m in prefix) >= 3:
            rows.append({"messages": prefix, "source": "tau-bench"})
    for row, note in zip(rows, RandomOracle(seed=0).annotate([r["messages"] for r in rows], 0.3)):
        row["critical_steps"] = note.steps
    return rows


def naive_rows(tokenizer: Any, rows: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """The naive way's rows (whole trajectory, same labels) and the token counts for the theoretical limit."""
    from atlas_hf.training.labeller import IGNORE_INDEX, CriticalStepLabeller

    labeller = CriticalStepLabeller(tokenizer, max_length=None, step_selection="critical")
    out, upto_last, total, supervised = [], 0, 0, 0
    for i, row in enumerate(rows):
        cut = labeller.label_row(row, i)
        full, _ = _render_length(tokenizer, row["messages"])
        if full[: len(cut.input_ids)] != cut.input_ids:
            sys.exit(f"bench_train: row {i}: the labelled row is not a prefix of the whole rendering.")
        out.append({"input_ids": full, "labels": cut.labels + [IGNORE_INDEX] * (len(full) - len(cut.labels))})
        upto_last, total, supervised = (
            upto_last + len(cut.input_ids),
            total + len(full),
            supervised + cut.num_supervised,
        )
    return out, {"tokens_up_to_last_supervised": upto_last, "all_tokens": total, "supervised_tokens": supervised}


def worker(config: str, data_path: Path, args: argparse.Namespace) -> dict[str, Any]:
    """One configuration, one epoch, in this process."""
    import psutil
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from trl import SFTConfig, SFTTrainer

    from atlas_hf.models import load_default_model, load_default_tokenizer
    from atlas_hf.training.trainer import AtlasSFTConfig, AtlasSFTTrainer

    torch.set_num_threads(args.threads)
    data = json.loads(data_path.read_text())
    tokenizer = load_default_tokenizer()
    model = load_default_model()
    common = dict(
        output_dir=tempfile.mkdtemp(prefix="bench_train_"),
        per_device_train_batch_size=args.batch_size,
        num_train_epochs=1,
        learning_rate=1e-4,
        bf16=False,
        gradient_checkpointing=False,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        seed=0,
        use_cpu=True,
        disable_tqdm=True,
        max_length=args.max_length,
    )
    lora = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules=LORA_TARGETS, task_type="CAUSAL_LM")
    if config == "naive_critical":
        trainer = SFTTrainer(
            model,
            args=SFTConfig(**common),
            train_dataset=Dataset.from_list(data["naive"]),
            processing_class=tokenizer,
            peft_config=lora,
        )
    else:
        selection = "critical" if config == "atlas_critical" else "all"
        trainer = AtlasSFTTrainer(
            model,
            args=AtlasSFTConfig(**common, step_selection=selection),
            train_dataset=Dataset.from_list(data["rows"]),
            processing_class=tokenizer,
            peft_config=lora,
        )
    rss_before = psutil.Process().memory_info().rss
    start = time.perf_counter()
    trainer.train()
    epoch_s = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    tokens = sum(len(r) for r in trainer.train_dataset["input_ids"])
    return {
        "config": config,
        "epoch_s": epoch_s,
        "peak_rss_mb": peak / 2**20,
        "peak_over_loaded_mb": (peak - rss_before) / 2**20,
        "step_losses": [e["loss"] for e in trainer.state.log_history if "loss" in e],
        "train_loss": trainer.state.log_history[-1].get("train_loss"),
        "trained_tokens": tokens,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fireact", type=int, default=16, help="HotpotQA (FireAct) trajectories")
    parser.add_argument("--tau", type=int, default=2, help="tau-bench airline trajectories (cut to --max-length)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max-length", type=int, default=2048)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "train.json")
    parser.add_argument("--worker", choices=CONFIGS, help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        args.result.write_text(json.dumps(worker(args.worker, args.data, args)))
        return

    from atlas_hf.models import load_default_tokenizer

    tokenizer = load_default_tokenizer()
    rows = build_sample(args, tokenizer)
    naive, counts = naive_rows(tokenizer, rows)
    steps = sum(sum(m["role"] == "assistant" for m in r["messages"]) for r in rows)
    workdir = Path(tempfile.mkdtemp(prefix="bench_train_"))
    data_path = workdir / "data.json"
    data_path.write_text(json.dumps({"rows": rows, "naive": naive}))

    runs: list[dict[str, Any]] = []
    for repeat in range(args.repeats):
        for config in CONFIGS:
            result = workdir / f"{config}-{repeat}.json"
            command = [
                sys.executable,
                __file__,
                "--worker",
                config,
                "--data",
                str(data_path),
                "--result",
                str(result),
                "--max-length",
                str(args.max_length),
                "--batch-size",
                str(args.batch_size),
                "--threads",
                str(args.threads),
            ]
            subprocess.run(command, check=True, stdout=subprocess.DEVNULL, env={**os.environ, "TQDM_DISABLE": "1"})
            run = json.loads(result.read_text()) | {"repeat": repeat}
            runs.append(run)
            print(
                f"  repeat {repeat} {config:15s} {run['epoch_s']:7.1f} s  peak {run['peak_rss_mb']:7.0f} MB",
                flush=True,
            )

    medians = {
        config: {
            key: statistics.median(r[key] for r in runs if r["config"] == config)
            for key in ("epoch_s", "peak_rss_mb", "peak_over_loaded_mb")
        }
        for config in CONFIGS
    }
    first = {c: next(r for r in runs if r["config"] == c) for c in CONFIGS}
    atlas_losses, naive_losses = first["atlas_critical"]["step_losses"], first["naive_critical"]["step_losses"]
    loss_gap = max(abs(a - b) / abs(b) for a, b in zip(atlas_losses, naive_losses)) if naive_losses else None
    kept_fraction = counts["tokens_up_to_last_supervised"] / counts["all_tokens"]
    limit = 1 / kept_fraction
    report = {
        "sample": {
            "fireact_rows": sum(r["source"] == "fireact" for r in rows),
            "tau_bench_rows": sum(r["source"] == "tau-bench" for r in rows),
            "steps": steps,
            "critical_steps": sum(len(r["critical_steps"]) for r in rows),
            "annotation": "RandomOracle(seed=0) at max_ratio 0.3 (stand-in for an LLM oracle)",
            **counts,
        },
        "setup": {
            "model": "SmolLM2-135M-Instruct (atlas_hf.models.load_default_model), fp32, CPU",
            "lora": {"r": 16, "alpha": 32, "target_modules": LORA_TARGETS},
            "batch_size": args.batch_size,
            "max_length": args.max_length,
            "threads": args.threads,
            "repeats": args.repeats,
            "gradient_checkpointing": False,
            "seed": 0,
        },
        "medians": medians,
        "speedup_vs_naive": medians["naive_critical"]["epoch_s"] / medians["atlas_critical"]["epoch_s"],
        "speedup_vs_all_steps": medians["atlas_all"]["epoch_s"] / medians["atlas_critical"]["epoch_s"],
        "memory_ratio_vs_naive": medians["naive_critical"]["peak_over_loaded_mb"]
        / max(medians["atlas_critical"]["peak_over_loaded_mb"], 1e-9),
        "tokens_up_to_last_supervised_over_all": kept_fraction,
        "theoretical_limit": limit,
        "max_relative_step_loss_gap_vs_naive": loss_gap,
        "runs": runs,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))

    print(
        f"\n{len(rows)} trajectories ({report['sample']['fireact_rows']} FireAct, "
        f"{report['sample']['tau_bench_rows']} "
        f"tau-bench), {steps} steps, {report['sample']['critical_steps']} critical; median of {args.repeats} runs"
    )
    print(f"{'configuration':16s} {'epoch (s)':>10s} {'peak RSS (MB)':>14s} {'train mem (MB)':>15s}")
    for config in CONFIGS:
        m = medians[config]
        print(f"{config:16s} {m['epoch_s']:10.1f} {m['peak_rss_mb']:14.0f} {m['peak_over_loaded_mb']:15.0f}")
    print(
        f"speed-up vs naive TRL: {report['speedup_vs_naive']:.2f}x (theoretical limit from the cut alone: "
        f"{limit:.2f}x = all tokens / tokens up to the last supervised one); vs all steps: "
        f"{report['speedup_vs_all_steps']:.2f}x; largest per-step loss gap vs naive: {loss_gap:.2e}"
    )
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
