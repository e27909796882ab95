"""Rollouts through an OpenAI-compatible server against in-process `TransformersPolicy`, same seeds.

    .venv/bin/python bench/bench_serve.py [--episodes 16] [--max-turns 4] [--repeats 3]

`transformers serve` runs the embedded SmolLM2-135M-Instruct on loopback (float32, CPU, with and
without `--continuous-batching`); `OpenAIChatPolicy` plays BabyAI GoToLocal through it with 1 and 16
requests in flight, and `TransformersPolicy` plays the same seeds in this process at batch 1 and 16.
Reported: episodes/s (median of `--repeats`), and each row's ratio to in-process batch 16. On a CPU
the server and the in-process model share the same two cores, so this measures the protocol and the
batching, not a GPU engine.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, os.path.dirname(__file__))

from common import median_time, write_results  # noqa: E402


def serve(folder: str, continuous_batching: bool) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cli = shutil.which("transformers", path=str(Path(sys.executable).parent)) or "transformers"
    flags = ["--continuous-batching"] if continuous_batching else []
    process = subprocess.Popen(
        [
            cli,
            "serve",
            folder,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--device",
            "cpu",
            "--dtype",
            "float32",
            *flags,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    for _ in range(240):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2).read()
            return process, f"http://127.0.0.1:{port}/v1"
        except OSError:
            time.sleep(0.5)
    process.kill()
    sys.exit("transformers serve did not start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--episodes", type=int, default=16)
    parser.add_argument("--max-turns", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    from atlas_hf import evaluate_agent
    from atlas_hf.models import ensure_default_model_cached, load_default_model, load_default_tokenizer
    from atlas_hf.evaluation.openai_policy import OpenAIChatPolicy

    folder = str(ensure_default_model_cached())
    common = dict(
        envs="babyai/GoToLocal",
        episodes=args.episodes,
        seed=100,
        max_turns=args.max_turns,
        max_new_tokens=24,
        progress=False,
    )
    model, tokenizer = load_default_model(), load_default_tokenizer()
    rows: dict[str, float] = {}
    actions: dict[str, list] = {}

    def timed(name: str, agent, batch: int, **extra) -> None:
        def run():
            report = evaluate_agent(agent, batch_size=batch, **common, **extra)
            actions[name] = [r["actions"] for r in report.records]

        rows[name] = args.episodes / median_time(run, args.repeats)
        print(f"{name:44s} {rows[name]:7.3f} episodes/s", flush=True)

    for batch in (1, 16):
        timed(f"in-process TransformersPolicy, batch {batch}", model, batch, tokenizer=tokenizer)
    for continuous in (False, True):
        process, url = serve(folder, continuous)
        try:
            for concurrency in (1, 16):
                policy = OpenAIChatPolicy(folder, url, max_tokens=24, max_concurrency=concurrency, timeout=300)
                kind = "continuous batching" if continuous else "no batching"
                timed(f"transformers serve ({kind}), {concurrency} in flight", policy, concurrency)
        finally:
            process.terminate()
            process.wait(30)
    reference = rows["in-process TransformersPolicy, batch 16"]
    same = {name: acts == actions["in-process TransformersPolicy, batch 1"] for name, acts in actions.items()}
    print("\nratio to in-process batch 16 (and: the same actions as in-process batch 1)")
    for name, value in rows.items():
        print(f"{name:44s} {value / reference:6.2f}x  {same[name]}")
    path = write_results(
        "serve",
        {
            "episodes_per_s": rows,
            "ratio_to_in_process_batch_16": {n: v / reference for n, v in rows.items()},
            "same_actions_as_in_process_batch_1": same,
            "episodes": args.episodes,
            "max_turns": args.max_turns,
            "repeats": args.repeats,
        },
    )
    print(f"written to {path}")


if __name__ == "__main__":
    main()
