"""Prompt-lookup drafts on expert replies: how many forwards `TransformersPolicy` would need per reply
for an agent that replies exactly as the expert does, with and without drafts.

    .venv/bin/python bench/bench_drafts.py [--envs babyai/GoToLocal,twx/cookingworld,...] [--episodes 20]

No model runs: each expert demo is replayed token by token. Without drafts a reply of n tokens (its
end-of-turn token included) costs n forwards. With drafts, the first token comes from the prompt's
forward, then each forward checks `PromptLookup`'s draft (up to `--draft-tokens`) against the
expert's next tokens and keeps the matching ones plus one; the draft's length adapts as in the
policy. A forward that checks k tokens costs more than a 1-token one on a CPU, so the decode time
saved is estimated too, from the median time of a forward of 1, 2, ... tokens against `--context`
cached tokens, measured here first (SmolLM2-135M in fp32, the policy's attention and cache). The
untrained model of `bench_eval.py` repeats itself, which flatters drafts; expert replies are what a
trained agent writes.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))

from common import write_results  # noqa: E402


def drafted_forwards(lookup, reply: list[int]) -> list[int]:
    """The tokens each forward checks to decode `reply` when each one also checks a draft, as
    `TransformersPolicy` does: 1 for the prompt's forward (its last token), then 1 + the draft's length."""
    lookup.extend(reply[:1])
    done, fed = 1, [1]
    while done < len(reply):
        draft = lookup.draft(len(reply) - done - 1)
        kept = 0
        while kept < len(draft) and draft[kept] == reply[done + kept]:
            kept += 1
        lookup.checked(len(draft), kept)
        lookup.extend(reply[done : done + kept + 1])
        done += kept + 1
        fed.append(1 + len(draft))
    return fed


def forward_ms(model, context: int, most: int, repeats: int = 7) -> list[float]:
    """Median milliseconds of a forward of 1..`most` tokens against `context` cached ones, as the policy runs it."""
    import torch

    from atlas_hf._upstream import attn_implementation, set_attn_implementation
    from atlas_hf.evaluation.policy import ATTENTION, _preallocated_cache, _register_attention

    torch.set_num_threads(os.cpu_count() or 1)
    _register_attention()
    cache = _preallocated_cache(context + most)
    times: dict[int, list[float]] = {n: [] for n in range(1, most + 1)}
    with torch.inference_mode():
        model(input_ids=torch.randint(100, 20000, (1, context)), cache=cache, use_cache=True, logits_to_keep=1)
        own = attn_implementation(model.config)
        set_attn_implementation(model.config, ATTENTION)
        try:
            for _ in range(repeats):
                for n in times:
                    start = time.perf_counter()
                    model(
                        input_ids=torch.randint(100, 20000, (1, n)),
                        attention_mask=torch.ones((1, context + n), dtype=torch.long),
                        position_ids=torch.arange(context, context + n)[None],
                        cache=cache,
                        use_cache=True,
                        logits_to_keep=n,
                    )
                    times[n].append((time.perf_counter() - start) * 1000)
                    for layer in cache.layers:
                        layer.rewind(context)
        finally:
            set_attn_implementation(model.config, own)
    return [statistics.median(times[n]) for n in times]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--envs", default="babyai/GoToLocal,twx/cookingworld,twx/twc,scienceworld/find-living-thing")
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--draft-tokens", type=int, default=8)
    parser.add_argument("--context", type=int, default=1200)
    args = parser.parse_args()

    from atlas_hf.evaluation.envs import expert_trajectories
    from atlas_hf.evaluation.policy import PromptLookup, TransformersPolicy
    from atlas_hf.models import load_model_and_tokenizer

    model, tokenizer = load_model_and_tokenizer()
    policy = TransformersPolicy(model, tokenizer)  # for its prompt rendering and stop tokens only
    cost = forward_ms(model, args.context, args.draft_tokens + 1)
    print("median ms of a forward of 1, 2, ... tokens:", [round(ms, 1) for ms in cost], flush=True)
    stop = policy.stop_ids[0]
    rows = {}
    for env in args.envs.split(","):
        plain = drafted = replies = 0
        plain_ms = drafted_ms = 0.0
        per_reply = []
        for demo in expert_trajectories(env, args.episodes, seed=0):
            messages, length = demo["messages"], 4  # a policy per episode: the draft length starts afresh
            for turn, message in enumerate(messages):
                if message["role"] != "assistant":
                    continue
                lookup = PromptLookup(policy._prompt_ids(messages[:turn]), args.draft_tokens, length)
                reply = tokenizer(message["content"], add_special_tokens=False)["input_ids"] + [stop]
                fed = drafted_forwards(lookup, reply)
                length = lookup.length
                plain, drafted, replies = plain + len(reply), drafted + len(fed), replies + 1
                plain_ms += cost[0] * len(reply)
                drafted_ms += sum(cost[min(n, len(cost)) - 1] for n in fed)
                per_reply.append(len(reply) / len(fed))
        rows[env] = {
            "replies": replies,
            "tokens_per_reply": round(plain / replies, 1),
            "forwards_per_reply_with_drafts": round(drafted / replies, 1),
            "tokens_per_forward": round(plain / drafted, 2),
            "median_tokens_per_forward": round(statistics.median(per_reply), 2),
            "estimated_decode_speedup": round(plain_ms / drafted_ms, 2),
        }
        print(f"{env:40s} {rows[env]}", flush=True)
    results = {"config": vars(args), "forward_ms": [round(ms, 1) for ms in cost], "rows": rows}
    path = write_results("drafts_on_expert_replies", results)
    print(f"results in {path}")


if __name__ == "__main__":
    main()
