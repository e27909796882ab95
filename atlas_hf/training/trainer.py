"""`AtlasSFTTrainer`: TRL's SFT, with the loss on the selected (critical) steps only.

The trainer takes an annotated dataset (`messages` + `critical_steps`), labels it once with
`label_dataset` (a cached `datasets.map`), and trains with TRL's loss. Training on 30% of the
steps costs less than labelling them in a full-length batch, with the same loss:

- each row is cut after its last supervised token (those tokens carry no loss in a causal LM);
- rows left with no supervised token are skipped (and counted);
- the LM head and the cross-entropy run only at the supervised positions (`atlas_hf.training.lm_head`;
  TRL's fused head does that on Triton devices only, elsewhere it scores every position);
- batches are padding-free when the attention implementation handles packed rows (flash attention).

Its configuration, `AtlasSFTConfig`, is in `atlas_hf.training.config`.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import torch
from accelerate.utils import is_peft_model
from datasets import Dataset
from transformers import AutoTokenizer, PreTrainedTokenizerBase
from trl import SFTTrainer

from atlas_hf._upstream import attn_implementation, trl_args_without_padding_free
from atlas_hf.hub.cards import CITATION
from atlas_hf.training.collator import CriticalStepDataCollator
from atlas_hf.training.config import AtlasSFTConfig
from atlas_hf.errors import InvalidInputError
from atlas_hf.training.dataset_labelling import LabelStats, label_dataset
from atlas_hf.training.lm_head import add_supervised_lm_head
from atlas_hf.training.parallelism import check_parallelism
from atlas_hf.training.labeller import IGNORE_INDEX
from atlas_hf.training.summary import training_summary, write_training_summary

logger = logging.getLogger(__name__)


def supports_padding_free(attn_implementation: str | None) -> bool:
    """Whether an attention implementation runs packed rows without a dense mask (flash attention)."""
    return attn_implementation is not None and "flash" in attn_implementation


class AtlasSFTTrainer(SFTTrainer):
    """TRL's `SFTTrainer` for ATLaS: the loss covers only the selected steps of each trajectory.

    Pass a dataset with `messages` and `critical_steps` (optional `tools`); `args.step_selection`
    picks the steps that carry loss (`"critical"`, or the paper's baselines `"all"`, `"random"`,
    `"non_critical"`). Rows that already hold `input_ids` and `labels` are used as they are. LoRA
    and the other PEFT methods come through `peft_config`, as in TRL.

    Args:
        model (`str` or `PreTrainedModel`): The model, or its name or path (as in TRL).
        args (`AtlasSFTConfig`, *optional*): The configuration; TRL's default named after the model if None.
        data_collator (`DataCollator`, *optional*): Defaults to a `CriticalStepDataCollator` for the
            labelled rows (padded, or packed with `padding_free`).
        train_dataset, eval_dataset (`datasets.Dataset`, `IterableDataset` or `dict` of them, *optional*):
            Annotated rows, or rows labelled by `CriticalStepLabeller`; labelled once with `label_dataset`.
        processing_class (`PreTrainedTokenizerBase`, *optional*): The tokenizer, with a chat template
            (loaded from the model's name if None).
        peft_config (`peft.PeftConfig`, *optional*): Train an adapter with this config.
        **kwargs: The rest of `SFTTrainer`'s arguments (`callbacks`, `optimizers`, ...).

    Raises:
        `InvalidInputError`: `args` is not an `AtlasSFTConfig`, or a dataset lacks the columns the
            labelling needs (which, and how to get them).
        `TrajectoryError`: A row that cannot be read (the row and the field are named).

    Example:
        >>> trainer = AtlasSFTTrainer(model, args=AtlasSFTConfig("out"), train_dataset=annotated,
        ...                           processing_class=tokenizer, peft_config=LoraConfig(r=16))
        >>> trainer.train(); trainer.atlas_summary()
    """

    _tag_names = ["trl", "sft", "atlas"]
    _name = "ATLaS SFT"
    _paper = {"title": "ATLaS: Agent Tuning via Learning Critical Steps", "id": "2503.02197", "citation": CITATION}

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
            raise InvalidInputError(
                f"AtlasSFTTrainer needs an AtlasSFTConfig, got {type(args).__name__}; build one with the same "
                "arguments plus the step selection (AtlasSFTConfig(..., step_selection='critical'))."
            )
        if train_dataset is None:
            raise InvalidInputError("`train_dataset` is required: a dataset with `messages` and `critical_steps`.")
        if processing_class is None:
            model_id = model if isinstance(model, str) else model.config._name_or_path
            processing_class = AutoTokenizer.from_pretrained(model_id, trust_remote_code=args.trust_remote_code)
        if not isinstance(processing_class, PreTrainedTokenizerBase):
            raise InvalidInputError(
                "AtlasSFTTrainer trains on text trajectories and needs a tokenizer as `processing_class`, got "
                f"{type(processing_class).__name__}."
            )
        if processing_class.pad_token is None:
            processing_class.pad_token = args.pad_token or processing_class.eos_token

        self.label_stats: dict[str, LabelStats] = {}
        # the main process labels first and fills the datasets cache; the others read it
        with args.main_process_first(desc="labelling the selected steps"):
            train_dataset = self._label(train_dataset, processing_class, args, "train")
            if isinstance(eval_dataset, dict):
                eval_dataset = {
                    k: self._label(d, processing_class, args, f"eval_{k}") for k, d in eval_dataset.items()
                }
            elif eval_dataset is not None:
                eval_dataset = self._label(eval_dataset, processing_class, args, "eval")

        if args.padding_free is None:
            if isinstance(model, str):
                attn = (args.model_init_kwargs or {}).get("attn_implementation")
            else:
                attn = attn_implementation(model.config)
            padding_free = supports_padding_free(attn)
        else:
            padding_free = bool(args.padding_free)
        if data_collator is None:
            data_collator = CriticalStepDataCollator(
                processing_class,
                padding_free=padding_free,
                pad_to_multiple_of=args.pad_to_multiple_of,
            )
        super().__init__(
            model,
            args=trl_args_without_padding_free(args),  # the collator above does the concatenation
            data_collator=data_collator,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            processing_class=processing_class,
            peft_config=peft_config,
            **kwargs,
        )
        check_parallelism(self.accelerator)
        self.args.padding_free = self.padding_free = padding_free
        base = self.model.get_base_model() if is_peft_model(self.model) else self.model
        self.supervised_only_head = bool(args.supervised_only_head) and add_supervised_lm_head(base)
        if args.supervised_only_head and not self.supervised_only_head:
            logger.info("The model scales or soft-caps its logits; TRL's fused LM head is kept.")

    def _label(self, dataset: Dataset, tokenizer: Any, args: AtlasSFTConfig, name: str) -> Dataset:
        labelled, self.label_stats[name] = label_dataset(
            dataset,
            tokenizer,
            args.labelling_options,
            name,
            num_proc=args.dataset_num_proc,
            skip_unsupervised_rows=args.skip_unsupervised_rows,
        )
        return labelled

    def compute_loss(
        self, model: Any, inputs: dict[str, Any], return_outputs: bool = False, num_items_in_batch: Any = None
    ) -> Any:
        """TRL's loss (and its entropy and token-accuracy metrics), plus the supervised token fraction."""
        result = super().compute_loss(
            model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch
        )
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
        """Write the adapter's model card into `output_dir` (what checkpoints and `push_to_hub` upload):
        the card of `atlas_hf.publish_adapter`, with PEFT's metadata, the training summary and `tags`.
        A model trained without PEFT (or before the adapter is saved there) gets TRL's card."""
        if not self._write_adapter_card(self.args.output_dir, dataset_name, tags, model_name):
            super().create_model_card(model_name=model_name, dataset_name=dataset_name, tags=tags)

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """Save the model as TRL does, with its training summary (`atlas_summary.json`) and, beside a PEFT
        adapter, its ATLaS model card (not PEFT's blank one)."""
        super().save_model(output_dir, _internal_call)
        if not _internal_call:  # checkpoints get theirs through TRL's `_save_checkpoint`
            folder, summary = output_dir or self.args.output_dir, self.atlas_summary()
            if self.is_world_process_zero() and os.path.isdir(folder):
                write_training_summary(summary, folder)
            self._write_adapter_card(folder, summary=summary)

    def _write_adapter_card(
        self,
        folder: str,
        dataset_name: str | None = None,
        tags: str | list[str] | None = None,
        model_name: str | None = None,
        summary: dict[str, Any] | None = None,
    ) -> bool:
        """Write the ATLaS card into `folder` if it holds this trainer's adapter (with `summary`, the
        training summary, when the caller has it); whether it did."""
        if not is_peft_model(self.model) or not os.path.exists(os.path.join(folder, "adapter_config.json")):
            return False
        if self.is_world_process_zero():
            from atlas_hf.hub.cards import adapter_card

            card = adapter_card(
                folder,
                dataset_repo_id=dataset_name,
                training_summary=summary if summary is not None else self.atlas_summary(),
                repo_id=model_name or self.hub_model_id,
                tags=[tags] if isinstance(tags, str) else tags,
            )
            card.save(os.path.join(folder, "README.md"))
        return True

    def atlas_summary(self) -> dict[str, Any]:
        """What was trained on, for logs and model cards (`atlas_hf.training.summary.training_summary`).

        Keys: step_selection, selection_ratio (for `"random"` and `"non_critical"`: the configured ratio,
        else the annotation's recorded cap, a list when the rows record several), epochs, optimizer_steps,
        learning_rate, rows, supervised_tokens, total_tokens, supervised_fraction, skipped_rows,
        truncated_steps, final_loss (the last logged training loss, `None` before training).
        """
        return training_summary(self)
