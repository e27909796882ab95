"""`CriticalStepDataCollator`: a drop-in `data_collator=` for TRL's `SFTTrainer`."""

from __future__ import annotations

from functools import cached_property
from typing import Any, Literal, Sequence

import torch

from atlas_hf.errors import InvalidInputError
from atlas_hf.training.selection import LabellingOptions
from atlas_hf.training.labeller import check_label_length, CriticalStepLabeller, IGNORE_INDEX, truncate_labelled


class CriticalStepDataCollator:
    """Batches trajectories whose loss covers only the selected (by default: critical) assistant turns.

    Rows may be raw (`messages` + `critical_steps`, optional `tools`: they are rendered with the
    tokenizer's chat template and labelled here) or pre-tokenized by `CriticalStepLabeller`
    (`input_ids` + `labels`: they are only padded). The batch holds `input_ids`, `attention_mask`
    and `labels` (-100 on padding and on every unsupervised token); with `padding_free=True` the
    rows are concatenated into one sequence with `position_ids` and no attention mask, for
    attention implementations that support it (flash attention).

    With stock TRL, pass raw rows with
    `SFTConfig(remove_unused_columns=False, dataset_kwargs={"skip_prepare_dataset": True})`.

    Args:
        tokenizer (`PreTrainedTokenizerFast`): A fast tokenizer with a chat template (for raw rows; rows
            that come tokenized only need its pad or eos token).
        options (`LabellingOptions`, *optional*): Which steps carry loss and where a long row is cut
            (`label_trajectory` has the truncation policy); `selection_ratio=None` reads the ratio cap each
            row's annotation recorded.
        padding_side (`str`, defaults to `"right"`): `"right"` or `"left"`.
        pad_to_multiple_of (`int`, *optional*): Round the padded length up to a multiple of this.
        padding_free (`bool`, defaults to `False`): Concatenate the rows instead of padding them.
        **overrides: `LabellingOptions` fields as keywords (`max_length=4096`, `step_selection="all"`).
    """

    def __init__(
        self,
        tokenizer: Any,
        options: LabellingOptions | None = None,
        *,
        padding_side: Literal["right", "left"] = "right",
        pad_to_multiple_of: int | None = None,
        padding_free: bool = False,
        **overrides: Any,
    ) -> None:
        if padding_side not in ("right", "left"):
            raise InvalidInputError(f"padding_side must be 'right' or 'left', got {padding_side!r}.")
        pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        if pad_token_id is None:
            raise InvalidInputError("The tokenizer has neither a pad token nor an eos token; set tokenizer.pad_token.")
        self.options = LabellingOptions.resolve(options, overrides, "CriticalStepDataCollator")
        self.tokenizer = tokenizer
        self.pad_token_id = int(pad_token_id)
        self.padding_side = padding_side
        self.pad_to_multiple_of = pad_to_multiple_of
        self.padding_free = padding_free

    @cached_property
    def labeller(self) -> CriticalStepLabeller:
        """Labels raw rows; built on first use, so rows that come tokenized need no chat template."""
        return CriticalStepLabeller.from_options(self.tokenizer, self.options)

    def _tokenized(self, feature: dict[str, Any], index: int) -> tuple[Sequence[int], Sequence[int]]:
        if "input_ids" in feature and feature["input_ids"] is not None:
            labels = feature.get("labels")
            if labels is None:
                raise InvalidInputError(
                    f"Row {index} of the batch has 'input_ids' but no 'labels' (nor 'messages'): it was tokenized "
                    "by SFTTrainer, which also dropped `critical_steps`. Pass the raw rows through: "
                    "SFTConfig(remove_unused_columns=False, dataset_kwargs={'skip_prepare_dataset': True}) "
                    "(on the command line: --remove_unused_columns False --dataset_kwargs "
                    "'{\"skip_prepare_dataset\": true}'), or label the rows with CriticalStepLabeller first."
                )
            check_label_length(feature["input_ids"], labels, f"{index} of the batch")
            return truncate_labelled(
                feature["input_ids"], labels, self.options.max_length, self.options.truncation_side
            )
        labelled = self.labeller.label_row(feature, f"{index} of the batch")  # a position in this batch
        return labelled.input_ids, labelled.labels

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        rows = [self._tokenized(feature, i) for i, feature in enumerate(features)]
        if self.padding_free:
            return self._concatenate(rows)
        return self._pad(rows)

    def _padded_length(self, length: int) -> int:
        multiple = self.pad_to_multiple_of
        return -(-length // multiple) * multiple if multiple else length

    def _pad(self, rows: list[tuple[Sequence[int], Sequence[int]]]) -> dict[str, torch.Tensor]:
        length = self._padded_length(max((len(ids) for ids, _ in rows), default=0))
        input_ids = torch.full((len(rows), length), self.pad_token_id, dtype=torch.long)
        labels = torch.full((len(rows), length), IGNORE_INDEX, dtype=torch.long)
        attention_mask = torch.zeros((len(rows), length), dtype=torch.long)
        for i, (ids, row_labels) in enumerate(rows):
            n = len(ids)
            where = slice(0, n) if self.padding_side == "right" else slice(length - n, length)
            input_ids[i, where] = torch.as_tensor(ids, dtype=torch.long)
            labels[i, where] = torch.as_tensor(row_labels, dtype=torch.long)
            attention_mask[i, where] = 1
            if self.padding_side == "left" and n:  # never predict a row's first token from padding
                labels[i, where.start] = IGNORE_INDEX
        return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}

    def _concatenate(self, rows: list[tuple[Sequence[int], Sequence[int]]]) -> dict[str, torch.Tensor]:
        input_ids, labels, position_ids = [], [], []
        for ids, row_labels in rows:
            if not len(ids):
                continue
            input_ids.extend(ids)
            # A row's first token is never predicted from the previous row's last one.
            labels.append(IGNORE_INDEX)
            labels.extend(row_labels[1:])
            position_ids.extend(range(len(ids)))
        pad = self._padded_length(len(input_ids)) - len(input_ids)
        return {
            "input_ids": torch.tensor([input_ids + [self.pad_token_id] * pad], dtype=torch.long),
            "labels": torch.tensor([labels + [IGNORE_INDEX] * pad], dtype=torch.long),
            "position_ids": torch.tensor([position_ids + list(range(pad))], dtype=torch.long),
        }
