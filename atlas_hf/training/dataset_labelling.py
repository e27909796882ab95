"""Labelling a whole dataset for training: token ids, labels on the selected steps, and the counts."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pyarrow.compute as pc
from datasets import Dataset, IterableDataset

from atlas_hf.errors import InvalidInputError
from atlas_hf.trajectories.schema import MESSAGES, ORACLE
from atlas_hf.training.selection import LabellingOptions
from atlas_hf.training.labeller import IGNORE_INDEX, CriticalStepLabeller, check_label_length, truncate_labelled

if TYPE_CHECKING:
    from atlas_hf.training.config import AtlasSFTConfig

logger = logging.getLogger(__name__)


@dataclass
class _TruncateTokenized:
    """`map(batched=True)` function for rows that come tokenized: `truncate_labelled` applied, and
    their supervised tokens counted."""

    max_length: int | None
    truncation_side: str

    def __call__(self, batch: dict[str, list[Any]], indices: list[int]) -> dict[str, list[Any]]:
        for index, ids, labels in zip(indices, batch["input_ids"], batch["labels"]):
            check_label_length(ids, labels, index)
        rows = [
            truncate_labelled(ids, labels, self.max_length, self.truncation_side)  # type: ignore[arg-type]
            for ids, labels in zip(batch["input_ids"], batch["labels"])
        ]
        return {
            "input_ids": [ids for ids, _ in rows],
            "labels": [labels for _, labels in rows],
            "num_supervised": [sum(1 for t in labels if t != IGNORE_INDEX) for _, labels in rows],
        }


@dataclass
class LabelStats:
    """What labelling did to one dataset.

    Attributes:
        rows (`int`): Rows kept.
        skipped_rows (`int`): Rows dropped for having no supervised token.
        supervised_tokens (`int`): Tokens that carry loss in the kept rows.
        total_tokens (`int`): Tokens fed forward in the kept rows.
        truncated_steps (`int`): Selected steps that lost labelled tokens to `max_length`.
        selection_ratios (`tuple[float, ...]`): The ratios `"random"` and `"non_critical"` selected at
            (one per recorded cap when the config leaves `selection_ratio` to the annotation; for a
            stream, those of the rows read so far); empty for the other selections and tokenized rows.
    """

    rows: int = 0
    skipped_rows: int = 0
    supervised_tokens: int = 0
    total_tokens: int = 0
    truncated_steps: int = 0
    selection_ratios: tuple[float, ...] = ()

    @property
    def supervised_fraction(self) -> float:
        """Supervised tokens / tokens fed forward."""
        return self.supervised_tokens / self.total_tokens if self.total_tokens else 0.0


def _labelling_function(columns: list[str], tokenizer: Any, options: LabellingOptions, name: str) -> Any:
    """The `map` function for a dataset with these columns: raw rows are labelled, tokenized rows cut."""
    if "input_ids" in columns:
        if "labels" not in columns:
            raise InvalidInputError(
                f"The {name} dataset has 'input_ids' but no 'labels'. Pass raw rows ('messages' + "
                "'critical_steps') or rows tokenized by atlas_hf.CriticalStepLabeller."
            )
        return _TruncateTokenized(options.max_length, options.truncation_side)
    if MESSAGES not in columns:
        raise InvalidInputError(
            f"The {name} dataset has no 'messages' column (columns: {columns}). Normalize it with "
            "atlas_hf.normalize_trajectories and annotate it with critical steps first."
        )
    return CriticalStepLabeller(tokenizer, options)


def label_dataset(
    dataset: Dataset,
    tokenizer: Any,
    options: LabellingOptions | AtlasSFTConfig,
    name: str = "train",
    *,
    num_proc: int | None = None,
    skip_unsupervised_rows: bool = True,
) -> tuple[Dataset, LabelStats]:
    """Tokenize and label `dataset` as `AtlasSFTTrainer` trains on it: `input_ids` and `labels` only.

    Raw rows (`messages` + `critical_steps`, optional `tools`) go through `CriticalStepLabeller`
    with the options' step selection; rows that come tokenized (`input_ids` + `labels`) are only
    cut to `max_length`. Rows with no supervised token are dropped (`skip_unsupervised_rows`).
    The work is a cached `datasets.map`, so a second call with the same inputs is free. An
    `IterableDataset` is labelled as it streams: its `LabelStats` fill up as rows are read.

    Args:
        dataset (`datasets.Dataset`): Annotated rows, or rows labelled by `CriticalStepLabeller`.
        tokenizer (`PreTrainedTokenizerBase`): The model's tokenizer, with a chat template.
        options (`LabellingOptions` or `AtlasSFTConfig`): How rows are labelled; a config gives its
            `labelling_options`, and its `dataset_num_proc` and `skip_unsupervised_rows` too.
        name (`str`): The split's name in log messages.
        num_proc (`int`, *optional*): Worker processes of the map.
        skip_unsupervised_rows (`bool`, defaults to `True`): Drop rows with no supervised token.

    Returns:
        `tuple`: The labelled dataset and its `LabelStats` (rows kept and skipped, tokens).

    Raises:
        `TypeError`: `dataset` is neither a `datasets.Dataset` nor an `IterableDataset`.
        `ValueError`: A column the labelling needs is missing (which one, and how to get it).
    """
    if not isinstance(options, LabellingOptions):  # an AtlasSFTConfig
        num_proc, skip_unsupervised_rows = options.dataset_num_proc, options.skip_unsupervised_rows
        options = LabellingOptions.from_config(options)
    if isinstance(dataset, IterableDataset):
        return _label_stream(dataset, tokenizer, options, name, skip_unsupervised_rows)
    if not isinstance(dataset, Dataset):
        raise InvalidInputError(
            f"The {name} dataset is a {type(dataset).__name__}; pass a datasets.Dataset or IterableDataset "
            "(Dataset.from_list builds one from a list of rows)."
        )
    columns = dataset.column_names
    function = _labelling_function(columns, tokenizer, options, name)
    tokenized = isinstance(function, _TruncateTokenized)
    ratios = () if tokenized else options.ratios_used(dataset.unique(ORACLE) if ORACLE in columns else [None])
    labelled = dataset.map(
        function,
        batched=True,
        num_proc=num_proc,
        with_indices=True,
        remove_columns=[c for c in columns if c not in ("input_ids", "labels")] if tokenized else columns,
        desc=f"Counting supervised tokens of {name}"
        if tokenized
        else f"Labelling {options.step_selection} steps of {name}",
    )
    table = labelled.with_format("arrow")[:]
    supervised = table.column("num_supervised").to_pylist()
    lengths = pc.list_value_length(table.column("input_ids")).to_pylist()
    truncated = (
        sum(table.column("num_truncated_steps").to_pylist()) if "num_truncated_steps" in table.column_names else 0
    )
    keep = [i for i, n in enumerate(supervised) if n > 0] if skip_unsupervised_rows else list(range(len(supervised)))
    stats = LabelStats(
        rows=len(keep),
        skipped_rows=len(supervised) - len(keep),
        supervised_tokens=sum(supervised[i] for i in keep),
        total_tokens=sum(lengths[i] for i in keep),
        truncated_steps=truncated,
        selection_ratios=ratios,
    )
    if stats.skipped_rows:
        logger.warning(
            "%s: skipped %d of %d rows that have no supervised token under step_selection=%r (no step "
            "selected, or every selected token cut by max_length=%s).",
            name,
            stats.skipped_rows,
            len(supervised),
            options.step_selection,
            options.max_length,
        )
    if truncated:
        logger.warning(
            "%s: %d selected steps lost labelled tokens to max_length=%s.", name, truncated, options.max_length
        )
    logger.info(
        "%s: %d rows, %d supervised tokens of %d (%.1f%%), step_selection=%r.",
        name,
        stats.rows,
        stats.supervised_tokens,
        stats.total_tokens,
        100 * stats.supervised_fraction,
        options.step_selection,
    )
    if len(keep) < len(supervised):
        labelled = labelled.select(keep)
    return labelled.select_columns(["input_ids", "labels"]), stats


@dataclass
class _CountingLabels:
    """Labels streamed rows and adds them to `stats` as they pass (for an `IterableDataset`)."""

    label: Any
    stats: LabelStats

    def __call__(self, batch: dict[str, list[Any]], indices: list[int]) -> dict[str, list[Any]]:
        out = self.label(batch, indices)
        for ids, supervised in zip(out["input_ids"], out["num_supervised"]):
            if supervised:
                self.stats.rows += 1
                self.stats.supervised_tokens += supervised
                self.stats.total_tokens += len(ids)
            else:
                self.stats.skipped_rows += 1
        self.stats.truncated_steps += sum(out.get("num_truncated_steps", []))
        options = getattr(self.label, "options", None)  # a CriticalStepLabeller's (tokenized rows have none)
        if options is not None:
            used = options.ratios_used(batch.get(ORACLE) or [None])
            self.stats.selection_ratios = tuple(sorted(set(used).union(self.stats.selection_ratios)))
        return out


def _has_supervision(num_supervised: int) -> bool:
    return num_supervised > 0


def _label_stream(
    dataset: IterableDataset, tokenizer: Any, options: LabellingOptions, name: str, skip_unsupervised_rows: bool
) -> tuple[Any, LabelStats]:
    """`label_dataset` for a stream: the same labels, computed lazily, counted as they are read."""
    columns = dataset.column_names or list(next(iter(dataset)))
    stats = LabelStats()
    counting = _CountingLabels(_labelling_function(columns, tokenizer, options, name), stats)
    labelled = dataset.map(counting, batched=True, with_indices=True, remove_columns=columns)
    if skip_unsupervised_rows:
        labelled = labelled.filter(_has_supervision, input_columns=["num_supervised"])
    logger.info(
        "%s: a stream; its rows are labelled (step_selection=%r) and counted as training reads them.",
        name,
        options.step_selection,
    )
    return labelled.select_columns(["input_ids", "labels"]), stats
