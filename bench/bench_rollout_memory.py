"""Rollout memory and speed: `TransformersPolicy` against a policy over stock `model.generate`, same seeds.

    .venv/bin/python bench/bench_rollout_memory.py [--env babyai/GoToLocal] [--episodes 16] [--max-turns 6]

Each row runs in its own process, so its peak RSS (`ru_maxrss`) is its own: `TransformersPolicy`
(KV cache kept between turns) and a callable that renders each conversation with the chat template
and calls `model.generate` on the left-padded batch (every turn re-encoded), at batch 1 and 16.
Reported: peak RSS, episodes/s, and whether the actions match the first row's.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))

from common import write_results  # noqa: E402


def stock_generate_policy(model, tokenizer, max_new_tokens):
    import torch

    tokenizer.padding_side = "left"

    def policy(conversations):
        texts = [tokenizer.apply_chat_template(c, tokenize=False, add_generation_prompt=True) for c in conversations]
        batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.inference_mode():
            out = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False,
                                 pad_token_id=tokenizer.pad_token_id)
        return [t.strip() for t in tokenizer.batch_decode(out[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)]

    return policy


def one_row(args) -> None:
    import torch

    from atlas_hf.evaluation import evaluate_agent
    from atlas_hf.models import load_model_and_tokenizer

    torch.set_num_threads(os.cpu_count() or 1)
    dtype = torch.bfloat16 if args.dtype == "bfloat16" else torch.float32
    model, tokenizer = load_model_and_tokenizer(None, None, dtype)
    agent = model if args.policy == "atlas" else stock_generate_policy(model, tokenizer, args.max_new_tokens)
    start = time.perf_counter()
    report = evaluate_agent(agent, args.env, args.episodes, 0, tokenizer=tokenizer, max_turns=args.max_turns,
                            batch_size=args.batch, max_new_tokens=args.max_new_tokens, progress=False)
    seconds = time.perf_counter() - start
    print(json.dumps({"seconds": seconds, "episodes_per_s": args.episodes / seconds,
                      "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6,
                      "actions": [r["actions"] for r in report.records]}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="babyai/GoToLocal")
    parser.add_argument("--episodes", type=int, default=16)
    parser.add_argument("--max-turns", type=int, default=6)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float32"))
    parser.add_argument("--batches", default="16,1")
    parser.add_argument("--policy", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.policy:
        return one_row(args)
    rows, reference = {}, None
    for batch in (int(b) for b in args.batches.split(",")):
        for policy in ("atlas", "stock_generate"):
            command = [sys.executable, __file__, "--policy", policy, "--batch", str(batch), "--env", args.env,
                       "--episodes", str(args.episodes), "--max-turns", str(args.max_turns),
                       "--max-new-tokens", str(args.max_new_tokens), "--dtype", args.dtype]
            out = subprocess.run(command, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
            row = json.loads(out)
            actions = row.pop("actions")
            reference = reference or actions
            row["same_actions_as_first_row"] = sum(a == b for a, b in zip(actions, reference))
            rows[f"{policy}, batch {batch}"] = row
            print(f"{policy:15s} batch {batch:>2}: {row['episodes_per_s']:.3f} episodes/s, peak RSS "
                  f"{row['peak_rss_gb']:.2f} GB, same actions {row['same_actions_as_first_row']}/{args.episodes}",
                  flush=True)
    path = write_results("rollout_memory", {"config": {k: v for k, v in vars(args).items() if k not in ("policy", "batch")},
                                            "rows": rows})
    print(f"results in {path}")


if __name__ == "__main__":
    main()
