"""The `atlas-hf` command: annotate, train, publish, eval, eval-oracle and demo."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Sequence

logger = logging.getLogger("atlas_hf")

EXIT_USAGE, EXIT_FAILED = 2, 1


def positive_int(text: str) -> int:
    """argparse type: an integer > 0."""
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


def ratio(text: str) -> float:
    """argparse type: a fraction in (0, 1]."""
    value = float(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"expected a fraction in (0, 1], got {text}")
    return value


def _output_folder_problem(path: str | None, flag: str) -> str | None:
    """Why `path` cannot be an output folder (it is a file), checked before any work is done or paid for."""
    if path and os.path.exists(path) and not os.path.isdir(path):
        return f"{flag} {path} is a file; give a folder to write into"
    return None


def _cmd_annotate(args: argparse.Namespace) -> int:
    from atlas_hf.annotation.annotator import annotate_dataset
    from atlas_hf.annotation.statistics import annotation_statistics, format_annotation_statistics
    from atlas_hf.annotation.oracles.registry import build_oracle
    from atlas_hf.trajectories.schema import MESSAGES
    from atlas_hf.trajectories.loading import load_rows

    misuse = (
        args.use_batches and args.oracle != "anthropic" and "--use-batches is for --oracle anthropic",
        args.dry_run
        and args.oracle != "anthropic"
        and f"--dry-run estimates what Claude costs; '{args.oracle}' is free",
        args.model and args.oracle in ("random", "all") and f"--model means nothing to the '{args.oracle}' baseline",
        args.oracle not in ("anthropic", "openai")
        and any(v is not None for v in (args.timeout, args.max_retries, args.max_concurrency))
        and "--timeout, --max-retries and --max-concurrency are for --oracle anthropic or openai",
        args.poll_interval is not None and args.oracle != "anthropic" and "--poll-interval is for --oracle anthropic",
        args.oracle == "openai"
        and not args.model
        and "--oracle openai needs --model (the model's name on the server)",
        args.base_url
        and args.oracle not in ("anthropic", "openai")
        and "--base-url is the server of --oracle openai (or anthropic)",
        _output_folder_problem(args.output, "--output"),
    )
    for problem in filter(None, misuse):
        print(f"error: {problem}.", file=sys.stderr)
        return EXIT_USAGE
    dataset = load_rows(args.input, args.split)
    client = {"use_batches": True} if args.use_batches else {}
    for flag, option in (
        ("timeout", "timeout"),
        ("max_retries", "max_retries"),
        ("max_concurrency", "max_concurrency"),
        ("poll_interval", "batch_poll_interval"),
    ):
        if getattr(args, flag) is not None:
            client[option] = getattr(args, flag)
    if args.base_url:
        client["base_url"] = args.base_url
    oracle = build_oracle(args.oracle, model=args.model, seed=args.seed, **client)
    if args.dry_run:
        print(oracle.estimate_cost(list(dataset[MESSAGES]), args.max_ratio))
        return 0
    # Message Batches: the whole dataset in one map batch, so every request is submitted before any wait.
    batch_size = args.batch_size if args.batch_size is not None else (None if args.use_batches else 64)
    annotated, annotator = annotate_dataset(
        dataset, oracle, args.max_ratio, args.cache_dir, batch_size=batch_size, num_proc=args.num_proc
    )
    annotated.save_to_disk(args.output)
    if annotator.stats.rows:  # 0 when worker processes (--num-proc) or the datasets cache did the work
        print(annotator.summary())
    print(format_annotation_statistics(annotation_statistics(annotated)))
    print(f"saved {len(annotated)} annotated trajectories to {args.output}")
    return 0


# the flags of earlier releases, kept for one release, and the config field each one sets
_LEGACY_TRAIN_FLAGS = {
    "step_selection": "step_selection",
    "selection_ratio": "selection_ratio",
    "epochs": "num_train_epochs",
    "max_steps": "max_steps",
    "max_length": "max_length",
    "model": "model_name_or_path",
}


def _cmd_train(args: argparse.Namespace) -> int:
    from atlas_hf.scripts import sft

    legacy = [
        f"--{field}={getattr(args, flag)}"
        for flag, field in _LEGACY_TRAIN_FLAGS.items()
        if getattr(args, flag, None) is not None
    ]
    if args.cpu:
        legacy.append("--use_cpu=true")
    source = [] if args.dataset in (None, "sample") else ["--dataset_name", args.dataset]
    script_args, config, model_args, mixture = sft.parse_args(
        ["--output_dir", args.output_dir, "--dataset_train_split", args.split, *source, *legacy, *args.trl_args],
        prog="atlas-hf train",
    )
    problem = _output_folder_problem(config.output_dir, "--output_dir")
    if problem:
        print(f"error: {problem}.", file=sys.stderr)
        return EXIT_USAGE
    trainer = sft.main(script_args, config, model_args, mixture)
    print(json.dumps(trainer.atlas_summary(), indent=2, default=str))
    print(f"adapter saved to {config.output_dir}")
    return 0


def _cmd_publish(args: argparse.Namespace) -> int:
    if not args.dataset and not args.adapter:
        print("error: give --dataset and/or --adapter to publish.", file=sys.stderr)
        return EXIT_USAGE
    problem = _output_folder_problem(args.local_dir, "--local-dir")
    if problem:
        print(f"error: {problem}.", file=sys.stderr)
        return EXIT_USAGE
    if not args.local_dir:
        for what, repo, flag in (
            ("dataset", args.dataset_repo, "--dataset-repo"),
            ("adapter", args.adapter_repo, "--adapter-repo"),
        ):
            if getattr(args, what) and not repo:
                print(
                    f"error: name the Hub repo of the {what} with {flag} (e.g. you/name), or write it "
                    "locally with --local-dir.",
                    file=sys.stderr,
                )
                return EXIT_USAGE
    from atlas_hf.hub.publishing import publish
    from atlas_hf.trajectories.loading import load_rows

    dataset = load_rows(args.dataset) if args.dataset else None
    # written locally without a repo name: the cards name the folder it came from, under a placeholder owner
    local_name = {
        what: f"your-name/{Path(str(source)).name or what}"
        for what, source in (("dataset", args.dataset), ("adapter", args.adapter))
        if source
    }
    where = publish(
        dataset=dataset,
        adapter=args.adapter,
        dataset_repo=args.dataset_repo or local_name.get("dataset"),
        adapter_repo=args.adapter_repo or local_name.get("adapter"),
        local_dir=args.local_dir,
        private=args.private,
    )
    for kind, url in where.items():
        print(f"{kind}: {url}")
    return 0


def _cmd_eval_oracle(args: argparse.Namespace) -> int:
    from atlas_hf.annotation.agreement import oracle_agreement
    from atlas_hf.trajectories.loading import load_rows

    report = oracle_agreement(load_rows(args.predicted), load_rows(args.reference))
    print(report.format())
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from atlas_hf.scripts.demo import run_demo

    run_demo(args.output_dir, args.max_steps, args.oracle, args.push_to_hub)
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    import torch

    from atlas_hf.evaluation.evaluator import EVAL_RESULTS_FILE, evaluate_agent
    from atlas_hf.models import load_model_and_tokenizer

    if args.base_url:  # the agent is served: OpenAI-compatible requests, every live episode's turn in flight
        from atlas_hf.evaluation.openai_policy import OpenAIChatPolicy

        if not args.model or args.adapter:
            print(
                "error: --base-url needs --model (the served model's name) and takes no --adapter "
                "(serve the adapter, e.g. vllm --enable-lora, and name it in --model).",
                file=sys.stderr,
            )
            return EXIT_USAGE
        model, tokenizer = (
            OpenAIChatPolicy(
                args.model, args.base_url, max_tokens=args.max_new_tokens, max_concurrency=args.batch_size
            ),
            None,
        )
    else:
        dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[args.dtype]
        model, tokenizer = load_model_and_tokenizer(args.model, args.adapter, dtype)
    report = evaluate_agent(
        model,
        args.envs,
        args.episodes,
        args.seed,
        tokenizer=tokenizer,
        max_turns=args.max_turns,
        batch_size=args.batch_size,
        max_new_tokens=args.max_new_tokens,
        records_path=args.records,
    )
    print(report.format_table())
    outputs = [args.output] if args.output else []
    if args.adapter and os.path.isdir(args.adapter):
        outputs.append(os.path.join(args.adapter, EVAL_RESULTS_FILE))  # publish_adapter puts it on the card
    for path in outputs:
        report.save(path)
        print(f"results written to {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The `atlas-hf` argument parser, one sub-command per stage (`atlas-hf train` hands its flags to the
    training script's TRL parser, `atlas_hf.scripts.sft.make_parser`)."""
    parser = argparse.ArgumentParser(prog="atlas-hf", description="ATLaS for TRL: train LLM agents on critical steps.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    from atlas_hf import __version__
    from atlas_hf.annotation.oracles.registry import default_oracle_name, list_oracles
    from atlas_hf.trajectories.schema import DEFAULT_MAX_RATIO

    parser.add_argument("--version", action="version", version=f"atlas-hf {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("annotate", help="mark the critical steps of trajectories with an oracle")
    p.add_argument("input", help="a .json/.jsonl/.parquet file, a saved dataset folder, a Hub dataset id, or 'sample'")
    p.add_argument("--output", "-o", required=True, help="folder to save the annotated dataset to")
    p.add_argument(
        "--oracle",
        choices=list_oracles(),
        default=default_oracle_name(),
        help="who chooses the steps (default: anthropic with ANTHROPIC_API_KEY set, else local)",
    )
    p.add_argument(
        "--model",
        help="the oracle's model (a Claude model name, the served model's name for --oracle "
        "openai, or a local model path)",
    )
    p.add_argument(
        "--base-url",
        help="the OpenAI-compatible server of --oracle openai, e.g. http://localhost:8000/v1 "
        "(its key, if any, in OPENAI_API_KEY)",
    )
    p.add_argument(
        "--max-ratio",
        type=ratio,
        default=DEFAULT_MAX_RATIO,
        help=f"the most steps chosen, as a fraction (default {DEFAULT_MAX_RATIO}; 1.0 with --oracle all)",
    )
    p.add_argument(
        "--cache-dir",
        default=os.path.join(".atlas_cache", "annotations"),
        help="answer cache, written as each answer arrives (a re-run pays only for missing rows)",
    )
    p.add_argument("--dry-run", action="store_true", help="estimate the cost without annotating")
    p.add_argument("--use-batches", action="store_true", help="Anthropic Message Batches (half price, slower)")
    p.add_argument(
        "--batch-size",
        type=positive_int,
        help="rows per map batch, sent concurrently (default 64; the whole dataset with --use-batches)",
    )
    p.add_argument("--num-proc", type=positive_int, help="worker processes of the map")
    p.add_argument("--split", default="train")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--timeout", type=float, help="seconds per request attempt (default 120; openai 300)")
    p.add_argument(
        "--max-retries",
        type=int,
        help="the SDK's retries of a failed request: 408/409/429/5xx, timeouts, dropped connections (default 8)",
    )
    p.add_argument("--max-concurrency", type=int, help="requests in flight at once (default 16)")
    p.add_argument("--poll-interval", type=float, help="seconds between polls of a Message Batch (default 30)")
    p.set_defaults(func=_cmd_annotate)

    p = sub.add_parser(
        "train",
        help="LoRA fine-tune on the selected steps with AtlasSFTTrainer",
        description="Train on the selected steps with the one training script (atlas_hf.scripts.sft, also "
        "recipes/sft_atlas.py). Every AtlasSFTConfig and ModelConfig field is a flag, spelt as in "
        "`trl sft` (--learning_rate 1e-4 --lora_r 8 --step_selection critical ...), as are the "
        "script's own (--annotate, --publish_adapter_repo, ...), and --config reads them from a YAML "
        "file. Defaults differ from TRL's only where training needs them: LoRA (r 16, alpha 32, all "
        "linear layers), no checkpoints, CPU when there is no accelerator.",
    )
    p.add_argument("dataset", help="an annotated dataset: saved folder, file, Hub id, or 'sample'")
    p.add_argument("--output-dir", "-o", default="outputs/adapter", help="where the adapter goes (%(default)s)")
    p.add_argument("--split", default="train", help="the dataset split (%(default)s)")
    for flag in ("--model", "--step-selection", "--selection-ratio", "--epochs", "--max-steps", "--max-length"):
        p.add_argument(flag, help=argparse.SUPPRESS)  # the 0.2 spelling; use the TRL flags
    p.add_argument("--cpu", action="store_true", help=argparse.SUPPRESS)
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("publish", help="publish an annotated dataset and/or an adapter with their cards")
    p.add_argument("--dataset", help="annotated dataset (saved folder or file)")
    p.add_argument("--adapter", help="adapter folder (as saved by training)")
    p.add_argument("--dataset-repo", help="Hub dataset repo id, e.g. you/agent-trajectories-atlas")
    p.add_argument("--adapter-repo", help="Hub model repo id, e.g. you/smollm2-atlas-lora")
    p.add_argument("--local-dir", help="write the repos into this folder instead of pushing to the Hub")
    visibility = p.add_mutually_exclusive_group()
    visibility.add_argument(
        "--private",
        dest="private",
        action="store_true",
        default=None,
        help="create private repos (default: the Hub's default for your account)",
    )
    visibility.add_argument("--public", dest="private", action="store_false", help="create public repos")
    p.set_defaults(func=_cmd_publish)

    p = sub.add_parser("eval-oracle", help="agreement of an annotation with a reference annotation")
    p.add_argument("predicted", help="annotated dataset (saved folder, file, Hub id or 'sample')")
    p.add_argument("reference", help="reference annotation of the same trajectories")
    p.set_defaults(func=_cmd_eval_oracle)

    p = sub.add_parser("eval", help="roll out a model (or an adapter on it) in text environments; success rates")
    p.add_argument("--adapter", help="PEFT adapter folder or Hub id (its results go to DIR/atlas_eval.json)")
    p.add_argument(
        "--model",
        help="base model (default: the adapter's base, else the embedded SmolLM2-135M-Instruct); "
        "with --base-url, the served model's name",
    )
    p.add_argument(
        "--base-url",
        help="roll out through this OpenAI-compatible server (vLLM, SGLang, TGI, transformers "
        "serve), e.g. http://localhost:8000/v1; --batch-size requests in flight",
    )
    p.add_argument(
        "--envs",
        default="babyai/GoToLocal",
        help="comma-separated environment names (default: %(default)s; see atlas_hf.evaluation.envs.list_envs())",
    )
    p.add_argument(
        "--episodes", type=positive_int, default=100, help="episodes per environment (default: %(default)s)"
    )
    p.add_argument(
        "--seed",
        type=int,
        default=1_000_000,
        help="episode i plays environment seed SEED+i (default: %(default)s, clear of training seeds)",
    )
    p.add_argument("--max-turns", type=positive_int, default=30, help="turn budget per episode (default: %(default)s)")
    p.add_argument(
        "--batch-size", type=positive_int, default=16, help="episodes stepped in lockstep (default: %(default)s)"
    )
    p.add_argument("--max-new-tokens", type=positive_int, default=64, help="longest reply (default: %(default)s)")
    p.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    p.add_argument("--output", help="write the results as JSON here")
    p.add_argument(
        "--records", help="append one JSON line per episode here; a re-run plays only the episodes missing from it"
    )
    p.set_defaults(func=_cmd_eval)

    p = sub.add_parser("demo", help="sample -> annotate -> train -> publish, on the embedded default")
    p.add_argument("--output-dir", default="outputs/demo")
    p.add_argument("--max-steps", type=positive_int, default=8, help="optimizer steps (default: %(default)s)")
    p.add_argument(
        "--oracle", choices=list_oracles(), help="default: anthropic with ANTHROPIC_API_KEY set, else local"
    )
    p.add_argument("--push-to-hub", metavar="REPO_ID", help="push the adapter (and REPO_ID-trajectories) to the Hub")
    p.set_defaults(func=_cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run `atlas-hf` with `argv` (default: the command line).

    Args:
        argv (`list[str]`, *optional*): The arguments after the program name.

    Returns:
        `int`: The exit status: 0, 1 when a stage failed (an `AtlasError` or `OSError`, printed as one
        line), 2 for a usage error, 130 when interrupted. Anything else is a bug and keeps its traceback.
    """
    from atlas_hf.errors import AtlasError

    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and args.command != "train":
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.trl_args = extra  # `train` hands them to TrlParser
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print(
            "interrupted: annotations so far are in the cache; run the same command again to resume.", file=sys.stderr
        )
        return 130
    # what atlas_hf reports on purpose, a missing file, an unreachable service: one line (the traceback
    # with -v); anything else is a bug and keeps its traceback
    except (AtlasError, OSError) as error:
        if args.verbose:
            raise
        print(f"error: {error}", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
