"""What the benchmarks share: the real data beside the checkout, medians, and the results folder."""

from __future__ import annotations

import json
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
RESULTS = ROOT / "bench" / "results"


def real_trajectories(per_file: int | None = None, seed: int = 0) -> list[dict[str, Any]]:
    """Rows of both real files as `messages` + `critical_steps` (random 30% steps standing in for an
    oracle's marks: the cost of labelling does not depend on which steps are marked, only how many)."""
    from atlas_hf.trajectories.schema import max_selected_steps

    fireact = SHARED_DATA / "fireact" / "hotpotqa.jsonl"
    tau = SHARED_DATA / "tau-bench" / "gpt-4o-airline.json"
    if not fireact.exists() or not tau.exists():
        sys.exit(f"The real data is not at {SHARED_DATA}; the benchmarks need ../shared/data beside the checkout.")
    rows = [json.loads(line)["messages"] for line in fireact.open() if line.strip()][:per_file]
    rows += [row["traj"] for row in json.loads(tau.read_text())][:per_file]
    rng = random.Random(seed)
    out = []
    for messages in rows:
        n = sum(m["role"] == "assistant" for m in messages)
        out.append({"messages": messages, "critical_steps": sorted(rng.sample(range(n), max_selected_steps(n, 0.3)))})
    return out


def median_time(fn: Callable[[], Any], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def write_results(name: str, results: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(results, indent=2))
    return path
