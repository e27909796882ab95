"""What an annotated dataset holds, counted from its rows (however they were made)."""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any, Mapping

from atlas_hf.errors import InvalidInputError
from atlas_hf.annotation.oracles.base import CATEGORIES
from atlas_hf.trajectories.schema import CRITICAL_CATEGORIES, CRITICAL_STEPS, ERROR, MESSAGES, ORACLE, num_steps

if TYPE_CHECKING:
    from datasets import Dataset, DatasetDict


def dataset_splits(dataset: Dataset | DatasetDict | Mapping[str, Dataset]) -> dict[str, Dataset]:
    """`{split: Dataset}` for a `Dataset` (its split, else "train"), a `DatasetDict` or a mapping."""
    if isinstance(dataset, Mapping):
        return dict(dataset)
    return {str(dataset.split) if dataset.split is not None else "train": dataset}


def annotation_statistics(dataset: Dataset | DatasetDict | Mapping[str, Dataset]) -> dict[str, Any]:
    """What an annotated dataset holds: rows, steps (assistant turns), critical steps and their categories,
    the critical ratio of the annotated rows, each row's ratio, the rows with an `atlas_error` and the oracles.

    Counted from the rows themselves, so it is right however they were made (`num_proc`, the
    `datasets` cache, several runs).
    """
    splits = dataset_splits(dataset)
    for name, split in splits.items():
        missing = {MESSAGES, CRITICAL_STEPS} - set(split.column_names)
        if missing:
            raise InvalidInputError(
                f"Split '{name}' has no {sorted(missing)} column(s); expected annotated rows "
                "(`messages` and `critical_steps`, as `atlas_hf.annotation.annotator` writes them). "
                "Annotate the dataset first."
            )
    rows = steps = annotated_steps = critical = errors = 0
    categories: Counter[str] = Counter()
    ratios: list[float] = []
    oracles: Counter[str] = Counter()
    for split in splits.values():
        columns = [
            c for c in (MESSAGES, CRITICAL_STEPS, CRITICAL_CATEGORIES, ERROR, ORACLE) if c in split.column_names
        ]
        for batch in split.select_columns(columns).iter(batch_size=1000):
            n = len(batch[MESSAGES])
            for i in range(n):
                row_steps = num_steps(batch[MESSAGES][i] or [])
                num_critical = len(batch[CRITICAL_STEPS][i] or [])
                steps += row_steps
                critical += num_critical
                categories.update(batch.get(CRITICAL_CATEGORIES, [[]] * n)[i] or [])
                if batch.get(ERROR, [None] * n)[i]:
                    errors += 1  # not annotated: left out of the ratios
                elif row_steps:
                    annotated_steps += row_steps
                    ratios.append(num_critical / row_steps)
                oracle = batch.get(ORACLE, [None] * n)[i]
                if oracle:
                    oracles[str(oracle)] += 1
            rows += n
    return {
        "rows": rows,
        "rows_per_split": {name: len(split) for name, split in splits.items()},
        "steps": steps,
        "critical_steps": critical,
        "critical_ratio": critical / annotated_steps if annotated_steps else 0.0,
        "categories": {c: categories.get(c, 0) for c in (*CATEGORIES, *sorted(set(categories) - set(CATEGORIES)))},
        "row_ratios": ratios,
        "error_rows": errors,
        "oracles": dict(oracles),
    }


def format_annotation_statistics(stats: Mapping[str, Any]) -> str:
    """One line of `annotation_statistics`, for a terminal."""
    categories = ", ".join(f"{name} {count}" for name, count in stats["categories"].items() if count)
    return (
        f"{stats['rows']} trajectories, {stats['steps']} steps, {stats['critical_steps']} critical "
        f"({stats['critical_ratio']:.0%} of the annotated rows' steps; {categories or 'no category'}), "
        f"{stats['error_rows']} rows with an atlas_error"
    )
