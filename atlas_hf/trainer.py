"""`AtlasSFTConfig` and `AtlasSFTTrainer`: TRL's SFT, with the loss on the selected (critical) steps only.

The trainer takes an annotated dataset (`messages` + `critical_steps`), labels it once with
`CriticalStepTokenizer` (a cached `datasets.map`), and trains with TRL's loss. Training on 30% of
the steps costs less than labelling them in a full-length batch, with the same loss:

- each row is cut after its last supervised token (those tokens carry no loss in a causal LM);
- rows left with no supervised token are skipped (and counted);
- the LM head and the cross-entropy run only at the supervised positions (TRL's fused head does
  that on Triton devices only; elsewhere it scores every position);
- batches are padding-free when the attention implementation handles packed rows (flash attention).
"""

from __future__ import annotations

import functools
import logging
import os
import types
from dataclasses import dataclass, field
from typing import Any

import pyarrow.compute as pc
import torch
from accelerate.utils import is_peft_model
from datasets import Dataset, IterableDataset
from transformers import AutoTokenizer, PreTrainedTokenizerBase
from trl import SFTConfig, SFTTrainer
from trl.kernels import ChunkedLogProbFunction
from trl.trainer.utils import FusedCausalLMOutput, maybe_gather_lm_head_ctx

from atlas_hf.collator import CriticalStepDataCollator
from atlas_hf.selection import STEP_SELECTIONS
from atlas_hf.tokenization import IGNORE_INDEX, CriticalStepTokenizer, truncate_labelled

logger = logging.getLogger(__name__)

_HEAD_OUTPUTS = ("log_probs", "entropy", "is_top1")
_VOCAB_CHUNK = 32768
# Config attributes that change how logits are computed from the LM head; models that set any of them
# keep TRL's own fused head, which knows how to apply them.
_LOGIT_TRANSFORMS = ("final_logit_softcapping", "logit_scale", "output_multiplier", "lm_head_multiplier", "logits_scaling")


@dataclass
class AtlasSFTConfig(SFTConfig):
    r"""
    Configuration for [`AtlasSFTTrainer`]: TRL's [`~trl.SFTConfig`] plus the ATLaS step selection.

    Parameters:
        > Parameters that choose which steps carry loss

        step_selection (`str`, *optional*, defaults to `"critical"`):
            `"critical"`: the annotated `critical_steps` (ATLaS). The paper's baselines on the same data:
            `"all"` (every assistant turn, full-trajectory SFT), `"random"` (random steps at
            `selection_ratio`) and `"non_critical"` (random steps among the non-critical ones, same count).
        selection_ratio (`float`, *optional*, defaults to `0.3`):
            Fraction of a trajectory's steps selected by `"random"` and `"non_critical"`.
        selection_seed (`int`, *optional*, defaults to `0`):
            Seed of the random selections; each trajectory draws from its own stable seed.

        > Parameters that control the data preprocessing

        truncation_side (`str`, *optional*, defaults to `"left"`):
            Rows are always cut after their last supervised token. A row still longer than `max_length`
            loses its oldest tokens (`"left"`, so the last selected turn keeps its labels) or its newest
            (`"right"`). The selected steps that lose labelled tokens are counted and logged.
        skip_unsupervised_rows (`bool`, *optional*, defaults to `True`):
            Drop rows with no supervised token (nothing selected, or everything truncated away): they
            would cost a forward and backward pass for a zero loss. Their number is logged.
        padding_free (`bool` or `None`, *optional*, defaults to `None`):
            Concatenate the rows of a batch into one sequence instead of padding them. `None` turns it on
            when the model's attention implementation handles packed rows without a dense mask (flash
            attention); with SDPA or eager attention a packed batch costs more than a padded one.

        > Parameters that control the training

        supervised_only_head (`bool`, *optional*, defaults to `True`):
            Run the LM head and the cross-entropy only at the supervised positions, with TRL's chunked
            log-probability kernel. The loss and its normalisation are TRL's (`num_items_in_batch`).
            With `False`, TRL's fused head scores every position (it compacts on CUDA/XPU only).

    The defaults otherwise are TRL's, except that `dataset_kwargs["skip_prepare_dataset"]` is always
    `True`: the trainer tokenizes and labels the rows itself.
    """

    step_selection: str = field(
        default="critical",
        metadata={"help": "Which steps carry loss.", "choices": list(STEP_SELECTIONS)},
    )
    selection_ratio: float = field(
        default=0.3, metadata={"help": "Fraction of steps selected by 'random' and 'non_critical'."}
    )
    selection_seed: int = field(default=0, metadata={"help": "Seed of the random step selections."})
    truncation_side: str = field(
        default="left",
        metadata={"help": "Which end of a row over `max_length` is cut.", "choices": ["left", "right"]},
    )
    skip_unsupervised_rows: bool = field(
        default=True, metadata={"help": "Drop rows with no supervised token (counted and logged)."}
    )
    supervised_only_head: bool = field(
        default=True, metadata={"help": "Compute the LM head and the loss only at supervised positions."}
    )
    padding_free: bool | None = field(  # type: ignore[assignment]
        default=None,
        metadata={"help": "Concatenate batch rows; None: on when the attention implementation is flash attention."},
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.step_selection not in STEP_SELECTIONS:
            raise ValueError(f"step_selection must be one of {STEP_SELECTIONS}, got {self.step_selection!r}.")
        if not 0.0 < self.selection_ratio <= 1.0:
            raise ValueError(f"selection_ratio must be in (0, 1], got {self.selection_ratio!r}.")
        if self.truncation_side not in ("left", "right"):
            raise ValueError(f"truncation_side must be 'left' or 'right', got {self.truncation_side!r}.")
        if self.packing:
            raise ValueError(
                "packing=True is not supported by AtlasSFTTrainer: rows are cut after their last supervised "
                "token and batched padding-free when the attention supports it. Set packing=False."
            )
        self.dataset_kwargs = {**(self.dataset_kwargs or {}), "skip_prepare_dataset": True}

    def __getstate__(self) -> dict[str, Any]:
        """Pickles never carry the Hub token: `Trainer` writes these arguments to `training_args.bin`
        in every checkpoint and uploads it with `push_to_hub`."""
        return {**self.__dict__, "hub_token": None}


def supports_padding_free(attn_implementation: str | None) -> bool:
    """Whether an attention implementation runs packed rows without a dense mask (flash attention)."""
    return attn_implementation is not None and "flash" in attn_implementation


def add_supervised_lm_head(model: Any) -> bool:
    """Make `model(..., labels=..., fused_lm_head=True)` project only the supervised positions.

    Call it after TRL's `add_fused_lm_head` on the same (unwrapped) model: the forward it installs runs
    the backbone, keeps the hidden states whose next-token label is not -100, and scores them with TRL's
    chunked log-probability kernel, returning TRL's `FusedCausalLMOutput` (same fields, zero on ignored
    positions). Cases it does not cover (pre-shifted labels, MoE router losses, logit scaling or
    soft-capping, sharded heads) go to TRL's forward. Returns whether the head was installed.
    """
    text_config = model.config.get_text_config()
    if any(getattr(text_config, name, None) is not None for name in _LOGIT_TRANSFORMS):
        return False
    trl_forward = model.forward

    @functools.wraps(type(model).forward)
    def forward(
        self: Any,
        *args: Any,
        fused_lm_head: bool = False,
        labels: torch.Tensor | None = None,
        shift_labels: torch.Tensor | None = None,
        num_items_in_batch: Any = None,
        **kwargs: Any,
    ) -> Any:
        lm_head = self.get_output_embeddings()
        if (
            not fused_lm_head
            or labels is None
            or shift_labels is not None
            or kwargs.get("output_router_logits")
            or getattr(text_config, "output_router_logits", False)
            or type(lm_head.weight).__name__ == "DTensor"
        ):
            return trl_forward(
                *args,
                fused_lm_head=fused_lm_head,
                labels=labels,
                shift_labels=shift_labels,
                num_items_in_batch=num_items_in_batch,
                **kwargs,
            )
        kwargs["use_cache"] = False
        hidden_states = self.base_model(*args, **kwargs).last_hidden_state[:, :-1]
        weight, bias = lm_head.weight, lm_head.bias
        hidden_states = hidden_states.to(weight.device)
        targets = labels[:, 1:].to(weight.device)
        mask = targets != IGNORE_INDEX
        with maybe_gather_lm_head_ctx(weight, bias):
            per_token = ChunkedLogProbFunction.apply(
                hidden_states[mask], weight, bias, targets[mask], 1.0, _VOCAB_CHUNK, None, 1.0, _HEAD_OUTPUTS
            )
        # `masked_scatter` keeps an all-ignored batch connected to the graph (a differentiable zero).
        log_probs, entropy, _, _, is_top1 = (
            None if x is None else x.new_zeros(mask.shape).masked_scatter(mask, x) for x in per_token
        )
        denominator = mask.sum().clamp(min=1) if num_items_in_batch is None else num_items_in_batch
        return FusedCausalLMOutput(
            loss=-log_probs.sum() / denominator,
            log_probs=log_probs,
            entropy=entropy,
            is_top1=is_top1,
            label_mask=mask,
        )

    model.forward = types.MethodType(forward, model)
    return True


@dataclass
class _TruncateTokenized:
    """`map(batched=True)` function for rows that come tokenized: `truncate_labelled` applied, and
    their supervised tokens counted."""

    max_length: int | None
    truncation_side: str

    def __call__(self, batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
        rows = [truncate_labelled(ids, labels, self.max_length, self.truncation_side)  # type: ignore[arg-type]
                for ids, labels in zip(batch["input_ids"], batch["labels"])]
        return {
            "input_ids": [ids for ids, _ in rows],
            "labels": [labels for _, labels in rows],
            "num_supervised": [sum(1 for t in labels if t != IGNORE_INDEX) for _, labels in rows],
        }


@dataclass
class LabelStats:
    """What labelling did to one dataset."""

    rows: int = 0
    skipped_rows: int = 0
    supervised_tokens: int = 0
    total_tokens: int = 0
    truncated_steps: int = 0

    @property
    def supervised_fraction(self) -> float:
        """Supervised tokens / tokens fed forward."""
        return self.supervised_tokens / self.total_tokens if self.total_tokens else 0.0


class AtlasSFTTrainer(SFTTrainer):
    """TRL's `SFTTrainer` for ATLaS: the loss covers only the selected steps of each trajectory.

    Pass a dataset with `messages` and `critical_steps` (optional `tools`); `args.step_selection`
    picks the steps that carry loss (`"critical"`, or the paper's baselines `"all"`, `"random"`,
    `"non_critical"`). Rows that already hold `input_ids` and `labels` are used as they are. LoRA
    and the other PEFT methods come through `peft_config`, as in TRL.

    Example:
        >>> trainer = AtlasSFTTrainer(model, args=AtlasSFTConfig("out"), train_dataset=annotated,
        ...                           processing_class=tokenizer, peft_config=LoraConfig(r=16))
        >>> trainer.train(); trainer.atlas_summary()
    """

    _tag_names = ["trl", "sft", "atlas"]
    _name = "ATLaS SFT"

    def __init__(
        self,
        model: Any,
        args: AtlasSFTConfig | None = None,
        data_collator: Any = None,
        train_dataset: Dataset | None = None,
        eval_dataset: Dataset | dict[str, Dataset] | None = None,
        processing_class: PreTrainedTokenizerBase | None = None,
        peft_config: Any = None,
        **kwargs: Any,
    ) -> None:
        if args is None:
            name = model if isinstance(model, str) else getattr(model.config, "_name_or_path", "") or "model"
            args = AtlasSFTConfig(f"{name.split('/')[-1]}-ATLaS")
        elif not isinstance(args, AtlasSFTConfig):
            raise TypeError(
                f"AtlasSFTTrainer needs an AtlasSFTConfig, got {type(args).__name__}; build one with the same "
                "arguments plus the step selection (AtlasSFTConfig(..., step_selection='critical'))."
            )
        if train_dataset is None:
            raise ValueError("`train_dataset` is required: a dataset with `messages` and `critical_steps`.")
        if processing_class is None:
            model_id = model if isinstance(model, str) else model.config._name_or_path
            processing_class = AutoTokenizer.from_pretrained(model_id, trust_remote_code=args.trust_remote_code)
        if not isinstance(processing_class, PreTrainedTokenizerBase):
            raise TypeError(
                "AtlasSFTTrainer trains on text trajectories and needs a tokenizer as `processing_class`, got "
                f"{type(processing_class).__name__}."
            )
        if processing_class.pad_token is None:
            processing_class.pad_token = args.pad_token or processing_class.eos_token

        self.label_stats: dict[str, LabelStats] = {}
        train_dataset = self._label(train_dataset, processing_class, args, "train")
        if isinstance(eval_dataset, dict):
            eval_dataset = {k: self._label(d, processing_class, args, f"eval_{k}") for k, d in eval_dataset.items()}
        elif eval_dataset is not None:
            eval_dataset = self._label(eval_dataset, processing_class, args, "eval")

        if args.padding_free is None:
            if isinstance(model, str):
                attn = (args.model_init_kwargs or {}).get("attn_implementation")
            else:
                attn = getattr(model.config, "_attn_implementation", None)
            padding_free = supports_padding_free(attn)
        else:
            padding_free = bool(args.padding_free)
        if data_collator is None:
            data_collator = CriticalStepDataCollator(
                processing_class,
                padding_free=padding_free,
                pad_to_multiple_of=args.pad_to_multiple_of,
            )
        # TRL refuses a custom collator with padding_free; the collator above does the concatenation.
        args.padding_free = False
        super().__init__(
            model,
            args=args,
            data_collator=data_collator,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            processing_class=processing_class,
            peft_config=peft_config,
            **kwargs,
        )
        args.padding_free = padding_free
        self.padding_free = padding_free
        base = self.model.get_base_model() if is_peft_model(self.model) else self.model
        self.supervised_only_head = bool(args.supervised_only_head) and add_supervised_lm_head(base)
        if args.supervised_only_head and not self.supervised_only_head:
            logger.info("The model scales or soft-caps its logits; TRL's fused LM head is kept.")

    def _label(self, dataset: Dataset, tokenizer: Any, args: AtlasSFTConfig, name: str) -> Dataset:
        """Tokenize and label `dataset` once (cached), drop unsupervised rows, and record the counts."""
        if isinstance(dataset, IterableDataset) or not isinstance(dataset, Dataset):
            raise TypeError(
                f"The {name} dataset is a {type(dataset).__name__}; AtlasSFTTrainer needs a datasets.Dataset "
                "(it counts supervised tokens and skipped rows up front). Materialize it with "
                "Dataset.from_generator or Dataset.from_list."
            )
        columns = dataset.column_names
        map_kwargs: dict[str, Any] = {"batched": True, "num_proc": args.dataset_num_proc}
        if "input_ids" in columns:
            if "labels" not in columns:
                raise ValueError(
                    f"The {name} dataset has 'input_ids' but no 'labels'. Pass raw rows ('messages' + "
                    "'critical_steps') or rows tokenized by atlas_hf.CriticalStepTokenizer."
                )
            labelled = dataset.map(
                _TruncateTokenized(args.max_length, args.truncation_side),
                remove_columns=[c for c in columns if c not in ("input_ids", "labels")],
                desc=f"Counting supervised tokens of {name}",
                **map_kwargs,
            )
        else:
            if "messages" not in columns:
                raise ValueError(
                    f"The {name} dataset has no 'messages' column (columns: {columns}). Normalize it with "
                    "atlas_hf.normalize_trajectories and annotate it with critical steps first."
                )
            labeller = CriticalStepTokenizer(
                tokenizer,
                max_length=args.max_length,
                step_selection=args.step_selection,  # type: ignore[arg-type]
                selection_ratio=args.selection_ratio,
                selection_seed=args.selection_seed,
                truncation_side=args.truncation_side,  # type: ignore[arg-type]
            )
            labelled = dataset.map(
                labeller,
                with_indices=True,
                remove_columns=columns,
                desc=f"Labelling {args.step_selection} steps of {name}",
                **map_kwargs,
            )
        table = labelled.with_format("arrow")[:]
        supervised = table.column("num_supervised").to_pylist()
        lengths = pc.list_value_length(table.column("input_ids")).to_pylist()
        truncated = sum(table.column("num_truncated_steps").to_pylist()) if "num_truncated_steps" in table.column_names else 0
        keep = [i for i, n in enumerate(supervised) if n > 0] if args.skip_unsupervised_rows else list(range(len(supervised)))
        stats = LabelStats(
            rows=len(keep),
            skipped_rows=len(supervised) - len(keep),
            supervised_tokens=sum(supervised[i] for i in keep),
            total_tokens=sum(lengths[i] for i in keep),
            truncated_steps=truncated,
        )
        self.label_stats[name] = stats
        if stats.skipped_rows:
            logger.warning(
                "%s: skipped %d of %d rows that have no supervised token under step_selection=%r (no step "
                "selected, or every selected token cut by max_length=%s).",
                name, stats.skipped_rows, len(supervised), args.step_selection, args.max_length,
            )
        if truncated:
            logger.warning("%s: %d selected steps lost labelled tokens to max_length=%s.", name, truncated, args.max_length)
        logger.info(
            "%s: %d rows, %d supervised tokens of %d (%.1f%%), step_selection=%r.",
            name, stats.rows, stats.supervised_tokens, stats.total_tokens, 100 * stats.supervised_fraction,
            args.step_selection,
        )
        if len(keep) < len(supervised):
            labelled = labelled.select(keep)
        return labelled.select_columns(["input_ids", "labels"])

    def compute_loss(
        self, model: Any, inputs: dict[str, Any], return_outputs: bool = False, num_items_in_batch: Any = None
    ) -> Any:
        """TRL's loss (and its entropy and token-accuracy metrics), plus the supervised token fraction."""
        result = super().compute_loss(model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch)
        mode = "train" if self.model.training else "eval"
        labels = inputs["labels"]
        supervised = (labels[:, 1:] != IGNORE_INDEX).sum()
        if "attention_mask" in inputs:
            tokens = inputs["attention_mask"].sum()
        else:
            tokens = torch.tensor(labels.numel(), device=labels.device)
        supervised = self.accelerator.gather_for_metrics(supervised).sum()
        tokens = self.accelerator.gather_for_metrics(tokens).sum()
        self._metrics[mode]["supervised_fraction"].append((supervised / tokens.clamp(min=1)).item())
        return result

    def create_model_card(
        self, model_name: str | None = None, dataset_name: str | None = None, tags: str | list[str] | None = None
    ) -> None:
        """Write the adapter's model card into `output_dir` (what `save_model` checkpoints and `push_to_hub`
        upload): the card of `atlas_hf.publish_adapter`, with PEFT's metadata and the training summary.
        A model trained without PEFT (or before the adapter is saved there) gets TRL's card."""
        if not is_peft_model(self.model) or not os.path.exists(os.path.join(self.args.output_dir, "adapter_config.json")):
            return super().create_model_card(model_name=model_name, dataset_name=dataset_name, tags=tags)
        if not self.is_world_process_zero():
            return
        from atlas_hf.hub import adapter_card

        card = adapter_card(self.args.output_dir, dataset_repo_id=dataset_name, training_summary=self.atlas_summary(),
                            repo_id=self.hub_model_id)
        card.save(os.path.join(self.args.output_dir, "README.md"))

    def atlas_summary(self) -> dict[str, Any]:
        """What was trained on, for logs and model cards.

        Keys: step_selection, selection_ratio, epochs, rows, supervised_tokens, total_tokens,
        supervised_fraction, skipped_rows, truncated_steps, final_loss (the last logged training loss,
        `None` before training).
        """
        stats = self.label_stats["train"]
        losses = [entry["loss"] for entry in self.state.log_history if "loss" in entry]
        if not losses:
            losses = [entry["train_loss"] for entry in self.state.log_history if "train_loss" in entry]
        return {
            "step_selection": self.args.step_selection,
            "selection_ratio": self.args.selection_ratio,
            "epochs": self.state.epoch if self.state.epoch else self.args.num_train_epochs,
            "rows": stats.rows,
            "supervised_tokens": stats.supervised_tokens,
            "total_tokens": stats.total_tokens,
            "supervised_fraction": stats.supervised_fraction,
            "skipped_rows": stats.skipped_rows,
            "truncated_steps": stats.truncated_steps,
            "final_loss": float(losses[-1]) if losses else None,
        }
