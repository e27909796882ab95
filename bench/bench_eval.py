"""Rollouts: episodes/s and peak memory of `evaluate_agent`'s `TransformersPolicy` against a policy
over stock `model.generate`, at batch 1 and 16, on a short and a long environment, same seeds.

    .venv/bin/python bench/bench_eval.py [--envs babyai/GoToLocal,scienceworld/find-living-thing]
        [--batches 1,16] [--episodes 16] [--max-turns 4] [--repeats 3] [--model DIR] [--adapter DIR]

Every row runs in its own process, so its peak RSS (`ru_maxrss`) is its own:
- `atlas`: `TransformersPolicy` (each episode's keys/values kept between turns in one reused buffer,
  environment calls overlapping the decode);
- `atlas, inline env`: the same with `overlap_env_steps=False` (every environment call waits);
- `stock_generate`: a callable that renders every conversation with the chat template and calls
  `model.generate` on the left-padded batch, each turn from scratch;
- `stock_generate, prompt lookup` (batch 1 only, as transformers allows): the same with
  `prompt_lookup_num_tokens=8`, transformers' own prompt-lookup decoding, the baseline for the drafts
  `TransformersPolicy` checks when one episode is live.
Repeats go round the rows (repeat 1 of every row, then repeat 2), so a busy machine slows every row
alike; medians are reported. In fp32 every row should play the same actions as `atlas` at batch 1.
The default model is the embedded SmolLM2-135M-Instruct, untrained: it writes long replies, a worst
case for the cost per turn.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))

from common import write_results  # noqa: E402


def stock_generate_policy(model, tokenizer, max_new_tokens, prompt_lookup=False):
    import torch

    tokenizer.padding_side = "left"
    lookup = {"prompt_lookup_num_tokens": 8} if prompt_lookup else {}

    def policy(conversations):
        texts = [tokenizer.apply_chat_template(c, tokenize=False, add_generation_prompt=True) for c in conversations]
        batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.inference_mode():
            out = model.generate(
                **batch,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=tokenizer.pad_token_id,
                **lookup,
            )
        return [
            t.strip() for t in tokenizer.batch_decode(out[:, batch["input_ids"].shape[1] :], skip_special_tokens=True)
        ]

    return policy


def same_actions(run: dict, reference: dict) -> int:
    """How many episodes of `run` played the same actions as those of `reference`."""
    return sum(a == b for a, b in zip(run["actions"], reference["actions"]))


def one_row(args) -> None:
    import torch

    from atlas_hf.evaluation.evaluator import evaluate_agent
    from atlas_hf.models import load_model_and_tokenizer

    torch.set_num_threads(os.cpu_count() or 1)
    dtype = torch.bfloat16 if args.dtype == "bfloat16" else torch.float32
    model, tokenizer = load_model_and_tokenizer(args.model, args.adapter, dtype)
    if args.adapter:
        model = model.merge_and_unload()
    if args.policy.startswith("stock_generate"):
        agent = stock_generate_policy(model, tokenizer, args.max_new_tokens, "prompt lookup" in args.policy)
    else:
        agent = model
    start = time.perf_counter()
    report = evaluate_agent(
        agent,
        args.envs,
        args.episodes,
        args.seed,
        tokenizer=tokenizer,
        max_turns=args.max_turns,
        batch_size=args.batch,
        max_new_tokens=args.max_new_tokens,
        progress=False,
        overlap_env_steps=args.policy != "atlas, inline env",
    )
    seconds = time.perf_counter() - start
    print(
        json.dumps(
            {
                "seconds": seconds,
                "episodes_per_s": args.episodes / seconds,
                "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6,
                "timing": report.timing,
                "actions": [r["actions"] for r in report.records],
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--envs", default="babyai/GoToLocal,scienceworld/find-living-thing")
    parser.add_argument("--batches", default="1,16")
    parser.add_argument("--episodes", type=int, default=16)
    parser.add_argument("--seed", type=int, default=1_000_000)
    parser.add_argument("--max-turns", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dtype", default="float32", choices=("bfloat16", "float32"))
    parser.add_argument("--model", default=None)
    parser.add_argument("--adapter", default=None)
    parser.add_argument("--name", default="bench_eval", help="results file: bench/results/<name>.json")
    parser.add_argument("--policy", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.policy:
        return one_row(args)
    rows = [
        (env, policy, batch)
        for env in args.envs.split(",")
        for batch in (int(b) for b in args.batches.split(","))
        for policy in ("atlas", "stock_generate")
    ]
    rows += [(env, "atlas, inline env", max(int(b) for b in args.batches.split(","))) for env in args.envs.split(",")]
    if "1" in args.batches.split(","):
        rows += [(env, "stock_generate, prompt lookup", 1) for env in args.envs.split(",")]
    runs: dict[tuple, list[dict]] = {row: [] for row in rows}
    shared = [
        "--episodes",
        str(args.episodes),
        "--seed",
        str(args.seed),
        "--max-turns",
        str(args.max_turns),
        "--max-new-tokens",
        str(args.max_new_tokens),
        "--dtype",
        args.dtype,
    ]
    shared += [f"--{k}={v}" for k, v in (("model", args.model), ("adapter", args.adapter)) if v]
    for repeat in range(args.repeats):
        for env, policy, batch in rows:
            command = [sys.executable, __file__, "--policy", policy, "--batch", str(batch), "--envs", env, *shared]
            done = subprocess.run(command, capture_output=True, text=True)
            if done.returncode:
                sys.exit(f"{env} {policy} batch {batch} failed:\n{done.stderr[-3000:]}")
            run = json.loads(done.stdout.strip().splitlines()[-1])
            runs[(env, policy, batch)].append(run)
            print(
                f"repeat {repeat + 1}: {env} {policy:29s} batch {batch:>2}: {run['episodes_per_s']:.3f} episodes/s, "
                f"peak RSS {run['peak_rss_gb']:.2f} GB",
                flush=True,
            )
    table = {}
    for env, policy, batch in rows:
        own, reference = runs[(env, policy, batch)], runs[(env, "atlas", min(int(b) for b in args.batches.split(",")))]
        timing = [r["timing"] for r in own]
        table[f"{env} | {policy} | batch {batch}"] = {
            "episodes_per_s": round(statistics.median(r["episodes_per_s"] for r in own), 4),
            "peak_rss_gb": round(statistics.median(r["peak_rss_gb"] for r in own), 3),
            "env_s": round(statistics.median(t.get("env_s", 0.0) for t in timing), 2),
            "env_wait_s": round(statistics.median(t.get("env_wait_s", 0.0) for t in timing), 2),
            "same_actions_as_atlas_batch_1": f"{same_actions(own[0], reference[0])}/{args.episodes}",
        }
    for env in args.envs.split(","):
        for batch in (int(b) for b in args.batches.split(",")):
            atlas, stock = table[f"{env} | atlas | batch {batch}"], table[f"{env} | stock_generate | batch {batch}"]
            table[f"{env} | batch {batch} | atlas / stock_generate"] = {
                "speed": round(atlas["episodes_per_s"] / stock["episodes_per_s"], 2),
                "peak_rss": round(atlas["peak_rss_gb"] / stock["peak_rss_gb"], 2),
            }
            lookup = table.get(f"{env} | stock_generate, prompt lookup | batch {batch}")
            if lookup:
                table[f"{env} | batch {batch} | atlas / stock_generate, prompt lookup"] = {
                    "speed": round(atlas["episodes_per_s"] / lookup["episodes_per_s"], 2),
                    "peak_rss": round(atlas["peak_rss_gb"] / lookup["peak_rss_gb"], 2),
                }
    for name, row in table.items():
        print(f"{name:70s} {row}")
    path = write_results(
        args.name,
        {"config": {k: v for k, v in vars(args).items() if k not in ("policy", "batch", "name")}, "rows": table},
    )
    print(f"results in {path}")


if __name__ == "__main__":
    main()
