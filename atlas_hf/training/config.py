"""`AtlasSFTConfig`: TRL's `SFTConfig` plus the ATLaS step selection (its trainer: `atlas_hf.training.trainer`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from transformers import TrainingArguments
from trl import SFTConfig

from atlas_hf.errors import InvalidInputError
from atlas_hf.training.selection import STEP_SELECTIONS, LabellingOptions


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
        selection_ratio (`float` or `None`, *optional*, defaults to `None`):
            Fraction of a trajectory's steps selected by `"random"` and `"non_critical"`. `None`: the ratio
            cap the annotation recorded in each row's `atlas_oracle` (the annotator's `max_ratio`, 0.3 by
            default), so a baseline supervises as many steps as the oracle was allowed to mark.
        selection_seed (`int`, *optional*, defaults to `0`):
            Seed of the random selections; each trajectory draws from its own stable seed.

        > Parameters that control the data preprocessing

        truncation_side (`str`, *optional*, defaults to `"left"`):
            Rows are always cut after their last supervised token. A row still longer than `max_length`
            loses its oldest tokens (`"left"`, so the last selected turn keeps its labels) or its newest
            (`"right"`). The selected steps that lose labelled tokens are counted and logged. It replaces
            TRL's `truncation_mode`, whose default (`"keep_start"`) is not applied: `"keep_end"` is the
            same as `"left"`, and `truncation_mode="keep_end"` with `truncation_side="right"` is refused.
        fit_template (`bool`, *optional*, defaults to `True`):
            Where the chat template has no system role, no tool role or drops `tool_calls`, rewrite those
            turns to fit (the system prompt folded into the first user turn, tool results as user turns,
            calls written as text), as a user of that model would by hand; each kind is logged once and
            counted. `False` raises an error naming the row instead.
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
    selection_ratio: float | None = field(
        default=None,
        metadata={
            "help": "Fraction of steps selected by 'random' and 'non_critical' (default: the annotation's "
            "recorded ratio cap)."
        },
    )
    selection_seed: int = field(default=0, metadata={"help": "Seed of the random step selections."})
    truncation_side: str = field(
        default="left",
        metadata={"help": "Which end of a row over `max_length` is cut.", "choices": ["left", "right"]},
    )
    fit_template: bool = field(
        default=True,
        metadata={
            "help": "Rewrite turns the chat template has no place for (system prompt, tool results, tool "
            "calls) instead of raising."
        },
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
        self.labelling_options  # the selection and truncation settings, validated in one place
        if self.truncation_mode == "keep_end" and self.truncation_side == "right":
            raise InvalidInputError(
                "truncation_mode='keep_end' keeps the end of a long row, truncation_side='right' cuts it: "
                "AtlasSFTTrainer cuts by truncation_side ('left' keeps the end, 'right' keeps the start); "
                "set that one."
            )
        if self.packing:
            raise InvalidInputError(
                "packing=True is not supported by AtlasSFTTrainer: rows are cut after their last supervised "
                "token and batched padding-free when the attention supports it. Set packing=False."
            )
        self.dataset_kwargs = {**(self.dataset_kwargs or {}), "skip_prepare_dataset": True}

    def __repr__(self) -> str:
        """`TrainingArguments`' rendering, which shows `<HUB_TOKEN>` in place of the token (the repr a
        dataclass generates, TRL's included, would print it)."""
        return TrainingArguments.__str__(self)

    __str__ = __repr__

    def __getstate__(self) -> dict[str, Any]:
        """Pickles never carry the Hub token: `Trainer` writes these arguments to `training_args.bin`
        in every checkpoint and uploads it with `push_to_hub`."""
        return {**self.__dict__, "hub_token": None}

    @property
    def labelling_options(self) -> LabellingOptions:
        """The step selection and truncation settings of this config, as the labeller takes them."""
        return LabellingOptions.from_config(self)
