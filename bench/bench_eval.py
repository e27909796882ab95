"""Rollout throughput: episodes/s of `evaluate_agent` in lockstep batches vs one episode at a time.

    .venv/bin/python bench/bench_eval.py [--model DIR] [--adapter DIR] [--batch-sizes 1,16] [--repeats 3]

The same model, environments and seeds at every batch size; the medians of --repeats runs, and
whether the episodes came out the same (same replies, same outcomes) as at batch size 1. The
default model is the embedded SmolLM2-135M-Instruct (untrained, it writes long replies: a worst
case for the cost per turn); pass the warm-start model or an adapter of the BabyAI recipe
(outputs/babyai/warm_start, outputs/babyai/adapters/*) to time an agent that acts.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))

from common import write_results  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None)
    parser.add_argument("--adapter", default=None)
    parser.add_argument("--envs", default="babyai/GoToLocal,babyai/PutNextLocal")
    parser.add_argument("--episodes", type=int, default=16, help="episodes per environment")
    parser.add_argument("--seed", type=int, default=1_000_000)
    parser.add_argument("--max-turns", type=int, default=6)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--batch-sizes", default="1,16")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float32"))
    args = parser.parse_args()

    import torch

    from atlas_hf.evaluation import evaluate_agent
    from atlas_hf.models import load_model_and_tokenizer

    torch.set_num_threads(os.cpu_count() or 1)
    dtype = torch.bfloat16 if args.dtype == "bfloat16" else torch.float32
    model, tokenizer = load_model_and_tokenizer(args.model, args.adapter, dtype)
    if args.adapter:
        model = model.merge_and_unload()
    envs = args.envs.split(",")
    episodes = args.episodes * len(envs)
    results: dict[str, dict] = {}
    reference = None
    for batch_size in (int(b) for b in args.batch_sizes.split(",")):
        times, report = [], None
        for _ in range(args.repeats):
            start = time.perf_counter()
            report = evaluate_agent(model, envs, args.episodes, args.seed, tokenizer=tokenizer,
                                    max_turns=args.max_turns, batch_size=batch_size,
                                    max_new_tokens=args.max_new_tokens, progress=False)
            times.append(time.perf_counter() - start)
        episodes_replies = [[m["content"] for m in r["messages"]] for r in report.records]
        reference = reference or episodes_replies
        same = sum(a == b for a, b in zip(reference, episodes_replies))
        median = statistics.median(times)
        results[str(batch_size)] = {
            "median_s": round(median, 2), "episodes_per_s": round(episodes / median, 3),
            "turns": sum(r["turns"] for r in report.records), "success_rate": report.success_rate,
            "episodes_identical_to_batch_1": f"{same}/{episodes}",
        }
        print(f"batch {batch_size:>3}: {episodes / median:.3f} episodes/s (median of {args.repeats}: {median:.1f} s), "
              f"success {report.success_rate:.1%}, identical to the first run's episodes: {same}/{episodes}",
              flush=True)
    sizes = list(results)
    speedup = results[sizes[-1]]["episodes_per_s"] / results[sizes[0]]["episodes_per_s"]
    print(f"speed-up, batch {sizes[-1]} over batch {sizes[0]}: {speedup:.2f}x")
    path = write_results("bench_eval", {"config": vars(args), "by_batch_size": results, "speedup": round(speedup, 2)})
    print(f"results in {path}")


if __name__ == "__main__":
    main()
