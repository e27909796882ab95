"""Benchmark: AnthropicOracle throughput and billed input tokens, against the loopback stand-in.

The stand-in answers every Messages request after a fixed latency (200 ms by default), so the
throughput measured is that of the client side: how many requests it keeps in flight. Each run
gets a fresh stand-in (empty prompt cache) in its own process, so the server does not compete
with the client for this process's GIL. Compared:
a plain one-request-at-a-time loop (the same real `anthropic.Anthropic` client, sequential
`client.messages.create` with the same request parameters) and `AnthropicOracle.annotate` at
concurrency 16 and 64, "cold" (a fresh oracle: its first request goes alone to warm the prompt
cache) and "warm" (an oracle whose cache window is open, as in every `map` batch after the first).

Token counts come from the stand-in's usage, a deterministic approximation (`len(text) // 4`),
not Claude's tokenizer: the ratios are meaningful, the absolute numbers are approximate.
Billed input tokens are reported as full-price-equivalent tokens (cache writes weigh 1.25,
cache reads 0.1), with prompt caching and with a stand-in whose cache never hits.

Requests run in waves of `concurrency`, so `n` is best a multiple of 64: with n = 400 the last
wave holds 16 requests and even a perfect client reaches only 0.89 of concurrency / latency.

    python bench/bench_annotate.py [--n 384] [--latency 0.2] [--runs 3]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import anthropic

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from anthropic_standin import AnthropicStandIn  # noqa: E402

from atlas_hf.annotation.oracles.anthropic import AnthropicOracle  # noqa: E402
from atlas_hf.annotation.oracles.pricing import CACHE_READ_MULTIPLIER, CACHE_WRITE_MULTIPLIER  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
KEY = "test-anthropic-bench-key"
RATIO = 0.3


def load_trajectories(n: int) -> list[list[dict[str, Any]]]:
    """`n` distinct trajectories: up to half from tau-bench airline, the rest from FireAct HotpotQA."""
    fireact, tau = DATA / "fireact" / "hotpotqa.jsonl", DATA / "tau-bench" / "gpt-4o-airline.json"
    if not (fireact.exists() and tau.exists()):
        sys.exit(f"benchmark data absent: expected {fireact} and {tau}")
    airline = [row["traj"] for row in json.loads(tau.read_text())[: n // 2]]
    with fireact.open() as f:
        hotpot = [json.loads(line)["messages"] for line, _ in zip(f, range(n - len(airline)))]
    if len(hotpot) + len(airline) < n:
        sys.exit(f"--n {n} is more than the {len(hotpot) + len(airline)} trajectories in {DATA}")
    return hotpot + airline


def _serve(latency: float, urls: Any, stop: Any) -> None:
    with AnthropicStandIn(api_key=KEY, latency=latency) as api:
        urls.put(api.base_url)
        stop.wait()


@contextlib.contextmanager
def standin_process(latency: float) -> Iterator[str]:
    """A fresh stand-in (empty prompt cache) in its own process, so it does not share our GIL."""
    context = multiprocessing.get_context("fork")  # no re-import of this module (and torch) per server
    urls, stop = context.Queue(), context.Event()
    process = context.Process(target=_serve, args=(latency, urls, stop), daemon=True)
    process.start()
    try:
        yield urls.get(timeout=60)
    finally:
        stop.set()
        process.join(timeout=10)


def sequential(base_url: str, trajectories: list[list[dict[str, Any]]]) -> float:
    """Seconds for a plain loop of `client.messages.create`, one request at a time."""
    params = AnthropicOracle(api_key=KEY, base_url=base_url)
    client = anthropic.Anthropic(api_key=KEY, base_url=base_url)
    start = time.perf_counter()
    for trajectory in trajectories:
        client.messages.create(**params.request_params(trajectory, RATIO))
    elapsed = time.perf_counter() - start
    client.close()
    return elapsed


def oracle_run(base_url: str, trajectories: list[list[dict[str, Any]]], concurrency: int, warm: bool) -> float:
    """Seconds for one `annotate` call of a fresh oracle (warmed first with one request when `warm`)."""
    oracle = AnthropicOracle(api_key=KEY, base_url=base_url, max_concurrency=concurrency)
    if warm:
        oracle.annotate(trajectories[:1], RATIO)
    start = time.perf_counter()
    annotations = oracle.annotate(trajectories, RATIO)
    elapsed = time.perf_counter() - start
    errors = [a.error for a in annotations if a.error]
    assert not errors, errors[:3]
    oracle.close()
    return elapsed


def billed_tokens(trajectories: list[list[dict[str, Any]]], cache: bool) -> dict[str, float]:
    """Input tokens per trajectory of one oracle run, with or without a prompt cache that hits."""
    with AnthropicStandIn(api_key=KEY, min_cacheable_tokens=1024 if cache else 10**9) as api:
        oracle = AnthropicOracle(api_key=KEY, base_url=api.base_url, max_concurrency=16)
        oracle.annotate(trajectories, RATIO)
        u = oracle.usage
        oracle.close()
    n = len(trajectories)
    billed = (
        u.input_tokens
        + CACHE_WRITE_MULTIPLIER * u.cache_creation_input_tokens
        + CACHE_READ_MULTIPLIER * u.cache_read_input_tokens
    )
    return {
        "input_tokens_per_traj": u.input_tokens / n,
        "cache_write_tokens_per_traj": u.cache_creation_input_tokens / n,
        "cache_read_tokens_per_traj": u.cache_read_input_tokens / n,
        "billed_input_equiv_tokens_per_traj": billed / n,
        "estimated_cost_usd_per_1k_traj": u.estimated_cost_usd() / n * 1000,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=384)
    parser.add_argument("--latency", type=float, default=0.2)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "annotate.json")
    args = parser.parse_args()
    trajectories = load_trajectories(args.n)

    timings: dict[str, list[float]] = {}
    for _ in range(args.runs):
        with standin_process(args.latency) as base_url:
            timings.setdefault("sequential loop", []).append(sequential(base_url, trajectories))
        for concurrency in (16, 64):
            for warm in (False, True):
                with standin_process(args.latency) as base_url:
                    name = f"AnthropicOracle c={concurrency} {'warm' if warm else 'cold'}"
                    timings.setdefault(name, []).append(oracle_run(base_url, trajectories, concurrency, warm))

    rows = []
    for name, seconds in timings.items():
        median = statistics.median(seconds)
        concurrency = int(name.split("c=")[1].split()[0]) if "c=" in name else 1
        ideal = concurrency / args.latency
        rows.append(
            {
                "name": name,
                "median_s": round(median, 3),
                "runs_s": [round(s, 3) for s in seconds],
                "traj_per_s": round(args.n / median, 2),
                "ideal_traj_per_s": round(ideal, 1),
                "fraction_of_ideal": round(args.n / median / ideal, 3),
            }
        )
    tokens = {"with_caching": billed_tokens(trajectories, True), "without_caching": billed_tokens(trajectories, False)}

    print(
        f"\n{args.n} trajectories (FireAct + tau-bench), stand-in latency {args.latency * 1000:.0f} ms, "
        f"median of {args.runs}"
    )
    print(f"{'runner':<30} {'median s':>9} {'traj/s':>8} {'ideal':>7} {'of ideal':>9}")
    for r in rows:
        print(
            f"{r['name']:<30} {r['median_s']:>9.2f} {r['traj_per_s']:>8.1f} {r['ideal_traj_per_s']:>7.1f} "
            f"{r['fraction_of_ideal']:>9.2f}"
        )
    print("\ninput tokens per trajectory (stand-in approximation len(text)//4)")
    for label, t in tokens.items():
        print(
            f"  {label:<16} uncached {t['input_tokens_per_traj']:>8.0f}  "
            f"cache write {t['cache_write_tokens_per_traj']:>6.0f}"
            f"  cache read {t['cache_read_tokens_per_traj']:>6.0f}  "
            f"billed-equivalent {t['billed_input_equiv_tokens_per_traj']:>8.0f}"
            f"  ${t['estimated_cost_usd_per_1k_traj']:.2f}/1k traj"
        )

    args.out.parent.mkdir(parents=True, exist_ok=True)
    result = {
        "n_trajectories": args.n,
        "latency_s": args.latency,
        "runs": args.runs,
        "model_priced": AnthropicOracle(api_key=KEY).model,
        "token_counting": "stand-in approximation: len(text) // 4",
        "throughput": rows,
        "input_tokens": tokens,
    }
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
