"""The ATLaS paper's table at small scale on a suite: expert demos -> oracle -> five rows -> rollouts.

    python recipes/babyai/reproduce_table.py --output-dir outputs/babyai               # the BabyAI suite
    python recipes/babyai/reproduce_table.py --suite mixed --output-dir outputs/mixed  # BabyAI + TWX + ScienceWorld

A suite is its held-in environments (demos on training seeds), its held-out ones (never trained on)
and a warm start on other games; `--held-in`, `--held-out` and `--warm-levels` override a suite's
(full environment names, or bare BabyAI levels). Per environment: `--train-episodes` demos and
`--eval-episodes` rollouts, or another count for one environment with `--train-episodes-for ENV N`
and `--eval-episodes-for ENV N` (fewer for a slow, long one).

1. Expert demos (`BabyAIBot` for BabyAI, the gold paths for ScienceWorld and TextWorldExpress) on
   the held-in environments, training seeds from 0; a shared warm start on *other* games (all
   steps, merged into the base) so the small model can act at all before the rows split.
2. Critical steps chosen by an oracle: Claude with `ANTHROPIC_API_KEY` set, else `--oracle`.
3. Five rows on identical demos, seeds and optimizer steps: `base` (the shared starting point, not
   trained further), `all`, `critical`, `random` and `non_critical` (at the annotation's cap, `--max-ratio`).
4. Greedy rollouts of every row on the held-in and held-out environments, on evaluation seeds that
   never overlap the training seeds (`--eval-seed`, default 1,000,000: the test split where an
   environment has splits). Success per environment and, for environments that measure progress,
   the mean progress score.

Writes `results.json`, `table.md` and `chart.png` into `--output-dir`; every stage's output is kept
there, so a re-run resumes where the last one stopped. Scale up on a GPU with `--model`,
`--train-episodes`, `--eval-episodes`, `--train-seeds 0,1,2` and `--device cuda` (see README.md).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

from atlas_hf.trajectories.schema import DEFAULT_MAX_RATIO

ROWS = ("base", "all", "critical", "random", "non_critical")

SUITES: dict[str, dict[str, Any]] = {
    "babyai": {
        "warm_levels": "GoToRedBallGrey,GoToObj,GoToDoor,OpenDoor",
        "held_in": "GoToLocal,PickupLoc,OpenDoorLoc",
        "held_out": "PickupDist,GoToObjDoor",
        "max_turns": 5,
        "max_new_tokens": 48,
    },
    # held out: a whole game (twc) and unseen task types; warm start on three other games
    "mixed": {
        "warm_levels": "babyai/GoToObj,twx/coin,scienceworld/find-animal",
        "held_in": "babyai/GoToLocal,twx/cookingworld,scienceworld/find-living-thing",
        "held_out": "babyai/PickupDist,twx/twc,scienceworld/find-plant",
        "max_turns": 30,
        "max_new_tokens": 64,
    },
}
"""The suites `--suite` names: what each of `--warm-levels`, `--held-in`, `--held-out`, `--max-turns` and
`--max-new-tokens` defaults to."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--output-dir", default="outputs/babyai")
    p.add_argument(
        "--suite",
        default="babyai",
        choices=sorted(SUITES),
        help="the environments and turn budget, unless the flags below say otherwise",
    )
    p.add_argument("--model", default=None, help="base model path (default: the embedded SmolLM2-135M-Instruct)")
    p.add_argument(
        "--warm-levels",
        default=None,
        help="environments of the shared all-steps warm start ('' to skip it; default: the suite's)",
    )
    p.add_argument("--warm-episodes", type=int, default=25, help="expert episodes per warm-start environment")
    p.add_argument("--warm-epochs", type=float, default=1.5, help="epochs of the warm-start demos")
    p.add_argument("--held-in", default=None, help="training environments (default: the suite's)")
    p.add_argument("--held-out", default=None, help="environments never trained on (default: the suite's)")
    p.add_argument("--train-episodes", type=int, default=30, help="expert episodes per held-in environment")
    p.add_argument("--eval-episodes", type=int, default=100, help="rollouts per environment and row")
    for which, what in (("train", "expert episodes"), ("eval", "rollouts")):
        p.add_argument(
            f"--{which}-episodes-for",
            nargs=2,
            action="append",
            default=[],
            metavar=("ENV", "N"),
            help=f"{what} of one environment, instead of --{which}-episodes (repeatable)",
        )
    p.add_argument("--eval-seed", type=int, default=1_000_000, help="first evaluation seed")
    p.add_argument(
        "--oracle",
        default=None,
        help="the critical-step oracle (default: anthropic with ANTHROPIC_API_KEY set, else local)",
    )
    p.add_argument(
        "--max-ratio",
        type=float,
        default=DEFAULT_MAX_RATIO,
        help="the oracle's ratio cap; the random and non-critical rows select at the same ratio",
    )
    p.add_argument("--rows", default=",".join(ROWS), help="rows to run")
    p.add_argument("--train-seeds", default="0", help="training seeds (rows are averaged over them)")
    p.add_argument("--epochs", type=float, default=1.0, help="epochs of the held-in demos (same steps for every row)")
    p.add_argument("--learning-rate", type=float, default=1e-3)
    p.add_argument("--batch-size", type=int, default=8, help="training batch size")
    p.add_argument("--lora-r", type=int, default=16)
    p.add_argument("--eval-batch-size", type=int, default=64, help="episodes stepped in lockstep")
    p.add_argument(
        "--max-turns",
        type=int,
        default=None,
        help="turn budget of an evaluation episode (default: the suite's; BabyAI's 5, where the expert "
        "needs 1.4-2.4 turns on average on its default levels)",
    )
    p.add_argument(
        "--max-new-tokens", type=int, default=None, help="longest reply in a rollout (default: the suite's)"
    )
    p.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float32"), help="base weights (adapters fp32)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    args = p.parse_args(argv)
    for name, value in SUITES[args.suite].items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    suite = env_names(args.held_in) + env_names(args.held_out)
    for which in ("train", "eval"):
        counts = {name: getattr(args, f"{which}_episodes") for name in suite}
        for name, count in getattr(args, f"{which}_episodes_for"):
            name = env_names(name)[0]
            if name not in counts or not count.isdigit() or int(count) <= 0:
                p.error(f"--{which}-episodes-for {name} {count}: name one of {suite} and a positive count")
            counts[name] = int(count)
        setattr(args, f"{which}_counts", counts)
    return args


def env_names(names: str) -> list[str]:
    """Comma-separated environment names, a bare BabyAI level standing for `babyai/<level>`."""
    from atlas_hf.evaluation.evaluator import split_env_names

    return [name if "/" in name else f"babyai/{name}" for name in split_env_names(names) if name]


def describe(counts: dict[str, int], envs: list[str]) -> str:
    """`30 each`, or each environment's count where they differ."""
    values = {counts[env] for env in envs}
    return f"{values.pop()} each" if len(values) == 1 else ", ".join(f"{env} {counts[env]}" for env in envs)


def log(message: str, start: float) -> None:
    print(f"[{(time.time() - start) / 60:5.1f} min] {message}", flush=True)


EXPERT_SOLVED: dict[str, str] = {}
"""The expert's record on the demo seeds of each environment, as `solved/episodes` (filled by `build_demos`);
only solved episodes become demos."""


def build_demos(envs: list[str], episodes: int | dict[str, int], seed: int) -> Any:
    from datasets import concatenate_datasets

    from atlas_hf.evaluation.envs import expert_trajectories

    counts = episodes if isinstance(episodes, dict) else {env: episodes for env in envs}
    parts = [expert_trajectories(env, counts[env], seed) for env in envs]
    for env, part in zip(envs, parts):
        EXPERT_SOLVED[env] = f"{len(part)}/{counts[env]}"
        print(f"  expert on {env}: {len(part)}/{counts[env]} solved", flush=True)
    return concatenate_datasets(parts)


def expert_ceiling(envs: list[str], args: argparse.Namespace) -> dict[str, float]:
    """The expert's success rate on the evaluation seeds within the rollouts' turn budget: the ceiling."""
    from atlas_hf.evaluation.envs import expert_trajectories

    counts = args.eval_counts
    return {
        env: len(expert_trajectories(env, counts[env], args.eval_seed, max_turns=args.max_turns)) / counts[env]
        for env in envs
    }


def train_lora(
    base: str | None,
    dataset: Any,
    output_dir: str,
    selection: str,
    args: argparse.Namespace,
    seed: int,
    max_steps: int,
) -> None:
    """LoRA on `base` through atlas_hf's one training call (`atlas_hf.training.train`, the defaults of
    `atlas-hf train` with this table's settings on top); saves the adapter into `output_dir`."""
    from atlas_hf.models import load_model_and_tokenizer
    from atlas_hf.training import default_training_config, train

    model, tokenizer = load_model_and_tokenizer(base, dtype=dtype_of(args))
    config, lora = default_training_config(
        output_dir,
        step_selection=selection,
        selection_seed=seed,
        seed=seed,
        max_steps=max_steps,
        per_device_train_batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        lr_scheduler_type="cosine",
        warmup_steps=max(1, max_steps // 20),
        logging_steps=max(1, max_steps // 5),
        report_to=[],
        max_length=4096,  # long ScienceWorld demos
        use_cpu=args.device == "cpu",
        disable_tqdm=True,
        gradient_checkpointing=False,  # small model: compute-bound
        lora_r=args.lora_r,
        lora_alpha=2 * args.lora_r,
    )
    trainer, _ = train(dataset, config, model, tokenizer, lora)
    summary = trainer.atlas_summary()
    loss = "n/a" if summary["final_loss"] is None else f"{summary['final_loss']:.3f}"
    print(f"  {selection}: {summary['supervised_tokens']} supervised tokens, final loss {loss}", flush=True)


def dtype_of(args: argparse.Namespace) -> Any:
    import torch

    return torch.bfloat16 if args.dtype == "bfloat16" else torch.float32


def warm_start(args: argparse.Namespace, out: Path, start: float) -> str | None:
    """The shared starting point: the base model, LoRA-tuned on all steps of the warm-start levels, merged."""
    levels = env_names(args.warm_levels)
    if not levels:
        return args.model
    folder = out / "warm_start"
    if (folder / "config.json").is_file():
        return str(folder)
    demos = build_demos(levels, args.warm_episodes, seed=0)
    log(f"warm start: all steps of {len(demos)} demos on {', '.join(levels)}", start)
    steps = math.ceil(len(demos) / args.batch_size * args.warm_epochs)
    train_lora(args.model, demos, str(out / "warm_start_adapter"), "all", args, seed=0, max_steps=steps)
    from atlas_hf.models import load_model_and_tokenizer

    model, tokenizer = load_model_and_tokenizer(args.model, str(out / "warm_start_adapter"), dtype_of(args))
    model.merge_and_unload().save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def evaluate_row(base: str | None, adapter: str | None, envs: list[str], args: argparse.Namespace, path: Path) -> Any:
    from atlas_hf.evaluation.evaluator import evaluate_agent, recorded_report
    from atlas_hf.models import load_model_and_tokenizer

    records = path.with_suffix(".jsonl")  # evaluate_agent resumes from it: only missing episodes are played
    episodes = {env: args.eval_counts[env] for env in envs}
    report = recorded_report(records, envs, episodes, args.eval_seed, max_turns=args.max_turns)
    if report is not None:
        return report
    model, tokenizer = load_model_and_tokenizer(base, adapter, dtype_of(args))
    if adapter is not None:
        model = model.merge_and_unload()  # same outputs, no adapter overhead in generation
    model.to(args.device)
    report = evaluate_agent(
        model,
        envs,
        episodes,
        args.eval_seed,
        tokenizer=tokenizer,
        max_turns=args.max_turns,
        batch_size=args.eval_batch_size,
        max_new_tokens=args.max_new_tokens,
        progress=False,
        records_path=records,
    )
    report.save(path)
    return report


def summarise(reports: dict[str, list[Any]], held_in: list[str], held_out: list[str]) -> dict[str, Any]:
    """The table: per row, success (and mean progress score) per environment, held-in/held-out
    averages with intervals, paired differences."""
    from atlas_hf.evaluation.evaluator import paired_difference, wilson_interval

    table: dict[str, Any] = {}
    for row, seeds in reports.items():
        levels: dict[str, Any] = {}
        for name in held_in + held_out:
            per_seed = [rep.envs[name] for rep in seeds]
            episodes = sum(r.episodes for r in per_seed)
            successes = sum(r.successes for r in per_seed)
            levels[name] = {
                "episodes": episodes,
                "success_rate": successes / episodes,
                "ci95": list(wilson_interval(successes, episodes)),
                "mean_score": sum(r.mean_score * r.episodes for r in per_seed) / episodes,
            }
        entry: dict[str, Any] = {"levels": levels}
        for split, envs in (("held_in", held_in), ("held_out", held_out)):
            boots = [paired_difference(rep, None, envs) for rep in seeds]
            scores = [paired_difference(rep, None, envs, metric="score") for rep in seeds]
            entry[split] = {
                "success_rate": sum(b["difference"] for b in boots) / len(boots),
                "ci95": [sum(b["ci95"][i] for b in boots) / len(boots) for i in (0, 1)],
                "by_training_seed": [b["difference"] for b in boots],
                "mean_score": sum(b["difference"] for b in scores) / len(scores),
            }
        table[row] = entry
    if "critical" in reports:
        for other in ("all", "random", "non_critical"):
            if other not in reports:
                continue
            for split, envs in (("held_in", held_in), ("held_out", held_out)):
                diffs = [paired_difference(a, b, envs) for a, b in zip(reports["critical"], reports[other])]
                table["critical"].setdefault("minus", {}).setdefault(other, {})[split] = {
                    "difference": sum(d["difference"] for d in diffs) / len(diffs),
                    "ci95": [sum(d["ci95"][i] for d in diffs) / len(diffs) for i in (0, 1)],
                    "by_training_seed": [d["difference"] for d in diffs],
                }
    return table


def markdown(
    table: dict[str, Any], held_in: list[str], held_out: list[str], ceiling: dict[str, float] | None = None
) -> str:
    head = ["row", *[short(n) for n in held_in], "held-in avg", *[short(n) for n in held_out], "held-out avg"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    if ceiling:
        cells = ["expert (ceiling)"]
        for names in (held_in, held_out):
            rates = [100 * ceiling[name] for name in names]
            cells += [f"{rate:.0f}" for rate in rates] + [f"{sum(rates) / len(rates):.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    for row, entry in table.items():
        cells = [f"`{row}`"]
        for names, split in ((held_in, "held_in"), (held_out, "held_out")):
            for lv in names:
                r = entry["levels"][lv]
                cells.append(f"{100 * r['success_rate']:.0f} ({100 * r['ci95'][0]:.0f}-{100 * r['ci95'][1]:.0f})")
            avg = entry[split]
            cells.append(
                f"**{100 * avg['success_rate']:.1f}** ({100 * avg['ci95'][0]:.0f}-{100 * avg['ci95'][1]:.0f})"
            )
        lines.append("| " + " | ".join(cells) + " |")
    if any(not name.startswith("babyai/") for name in held_in + held_out):  # environments that measure progress
        lines += [
            "",
            "| mean progress score (0-100) | "
            + " | ".join(short(n) for n in held_in + held_out)
            + " | held-in avg | held-out avg |",
            "|---|" + "---|" * (len(held_in) + len(held_out) + 2),
        ]
        for row, entry in table.items():
            cells = [f"{100 * entry['levels'][n]['mean_score']:.0f}" for n in held_in + held_out]
            cells += [f"{100 * entry[split]['mean_score']:.1f}" for split in ("held_in", "held_out")]
            lines.append(f"| `{row}` | " + " | ".join(cells) + " |")
    minus = table.get("critical", {}).get("minus", {})
    if minus:
        lines += [
            "",
            "| critical minus | held-in (95% paired bootstrap) | held-out (95% paired bootstrap) |",
            "|---|---|---|",
        ]
        for other, splits in minus.items():
            cells = [
                f"{100 * s['difference']:+.1f} ({100 * s['ci95'][0]:+.1f} to {100 * s['ci95'][1]:+.1f})"
                for s in (splits["held_in"], splits["held_out"])
            ]
            lines.append(f"| `{other}` | {cells[0]} | {cells[1]} |")
    seeds = max(len(entry["held_in"]["by_training_seed"]) for entry in table.values())
    if seeds > 1:  # training noise: each seed's own averages, beside the pooled ones above
        lines += [
            "",
            "| by training seed | " + " | ".join(f"seed {i}: held-in / held-out" for i in range(seeds)) + " |",
            "|---|" + "---|" * seeds,
        ]
        for row, entry in table.items():
            pairs = list(zip(entry["held_in"]["by_training_seed"], entry["held_out"]["by_training_seed"]))
            cells = [f"{100 * a:.1f} / {100 * b:.1f}" for a, b in pairs] + ["(no training seed)"] * (
                seeds - len(pairs)
            )
            lines.append(f"| `{row}` | " + " | ".join(cells) + " |")
        for other, splits in minus.items():
            pairs = list(zip(splits["held_in"]["by_training_seed"], splits["held_out"]["by_training_seed"]))
            lines.append(
                f"| critical minus `{other}` | "
                + " | ".join(f"{100 * a:+.1f} / {100 * b:+.1f}" for a, b in pairs)
                + " |"
            )
    return "\n".join(lines) + "\n"


def short(name: str) -> str:
    """A column name: a BabyAI level bare, any other environment in full."""
    return name.removeprefix("babyai/")


def chart(table: dict[str, Any], path: Path, suite: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = list(table)
    fig, ax = plt.subplots(figsize=(7, 3.6), dpi=120)
    width = 0.38
    for k, (split, label) in enumerate((("held_in", "held-in"), ("held_out", "held-out"))):
        rates = [100 * table[r][split]["success_rate"] for r in rows]
        low = [rate - 100 * table[r][split]["ci95"][0] for r, rate in zip(rows, rates)]
        high = [100 * table[r][split]["ci95"][1] - rate for r, rate in zip(rows, rates)]
        xs = [i + (k - 0.5) * width for i in range(len(rows))]
        ax.bar(xs, rates, width, yerr=[low, high], capsize=3, label=label)
    ax.set_xticks(range(len(rows)), rows)
    ax.set_ylabel("success rate (%)")
    ax.set_ylim(0, 100)
    ax.set_title(f"{suite} suite: rollouts by step selection (95% bootstrap intervals)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    import datasets
    import transformers

    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    start = time.time()
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    held_in, held_out = env_names(args.held_in), env_names(args.held_out)
    rows = [r for r in args.rows.split(",") if r]
    from atlas_hf.annotation.oracles import default_oracle_name

    oracle_name = args.oracle or default_oracle_name()
    train_seeds = [int(s) for s in args.train_seeds.split(",")]

    base = warm_start(args, out, start)
    log(f"expert demos on the held-in environments ({describe(args.train_counts, held_in)} seeds from 0)", start)
    demos = build_demos(held_in, args.train_counts, seed=0)
    from atlas_hf import annotate_dataset, annotation_statistics, build_oracle

    log(f"annotating {len(demos)} demos with the {oracle_name} oracle (max_ratio {args.max_ratio})", start)
    annotated, _ = annotate_dataset(demos, build_oracle(oracle_name), args.max_ratio, out / "annotations")
    stats = annotation_statistics(annotated)
    print(
        f"  {stats['critical_steps']} critical of {stats['steps']} steps ({stats['critical_ratio']:.0%})", flush=True
    )
    steps = math.ceil(len(annotated) / args.batch_size * args.epochs)

    reports: dict[str, list[Any]] = {}
    levels = held_in + held_out
    ceiling = expert_ceiling(levels, args)
    print(
        "  expert on the evaluation seeds within the turn budget: "
        + ", ".join(f"{name} {rate:.0%}" for name, rate in ceiling.items()),
        flush=True,
    )
    for row in rows:
        reports[row] = []
        for seed in train_seeds if row != "base" else train_seeds[:1]:
            adapter = None
            if row != "base":
                adapter = str(out / "adapters" / f"{row}-seed{seed}")
                if not (Path(adapter) / "adapter_config.json").is_file():
                    log(f"training `{row}` (seed {seed}, {steps} steps)", start)
                    train_lora(base, annotated, adapter, row, args, seed, steps)
            log(
                f"evaluating `{row}` (seed {seed}) on {len(levels)} environments, "
                f"{describe(args.eval_counts, levels)} episodes",
                start,
            )
            report = evaluate_row(base, adapter, levels, args, out / "eval" / f"{row}-seed{seed}.json")
            print(report.format_table(), flush=True)
            reports[row].append(report)

    table = summarise(reports, held_in, held_out)
    minutes = (time.time() - start) / 60
    results = {
        "rows": table,
        "held_in": held_in,
        "held_out": held_out,
        "oracle": oracle_name,
        "annotation": {k: stats[k] for k in ("rows", "steps", "critical_steps", "critical_ratio")},
        "expert_solved": dict(EXPERT_SOLVED),
        "expert_on_eval_seeds": ceiling,
        "config": {k: v for k, v in vars(args).items()},
        "minutes": round(minutes, 1),
    }
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "table.md").write_text(markdown(table, held_in, held_out, ceiling))
    chart(table, out / "chart.png", args.suite)
    log(f"done: {out / 'table.md'}, {out / 'results.json'}, {out / 'chart.png'}", start)
    print(markdown(table, held_in, held_out, ceiling))
    return results


if __name__ == "__main__":
    main()
