"""How far one annotation of critical steps agrees with another (a reference, or a second oracle).

Step level: a step counts as a true positive when both mark it; precision, recall and F1 are
micro-averaged over all rows. Category level: of the steps both mark, the fraction given the same
category; and per category, precision / recall / F1 over (row, step, category) triples. A ratio
whose denominator is zero is reported as 0.0. Rows whose prediction carries an `atlas_error` count
as marking nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from atlas_hf.annotation.cache import canonical_messages
from atlas_hf.errors import InvalidInputError
from atlas_hf.annotation.oracles.base import CATEGORIES
from atlas_hf.trajectories.schema import CRITICAL_CATEGORIES, CRITICAL_STEPS, ERROR, MESSAGES


@dataclass
class PRF:
    """Precision, recall and F1 with the counts behind them.

    Attributes:
        true_positives (`int`): Items both sides marked.
        predicted (`int`): Items the predicted side marked.
        reference (`int`): Items the reference side marked.
    """

    true_positives: int = 0
    predicted: int = 0
    reference: int = 0

    @property
    def precision(self) -> float:
        return self.true_positives / self.predicted if self.predicted else 0.0

    @property
    def recall(self) -> float:
        return self.true_positives / self.reference if self.reference else 0.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0


@dataclass
class AgreementReport:
    """The agreement of a predicted annotation with a reference one.

    Attributes:
        rows (`int`): Rows compared.
        steps (`PRF`): Step-level agreement, micro-averaged over rows.
        same_category (`int`): Steps both sides marked and gave the same category.
        per_category (`dict[str, PRF]`): Agreement on the steps of each category.
        prediction_errors (`int`): Predicted rows with `atlas_error` set (counted as marking nothing).
    """

    rows: int
    steps: PRF
    same_category: int
    per_category: dict[str, PRF] = field(default_factory=dict)
    prediction_errors: int = 0

    @property
    def precision(self) -> float:
        return self.steps.precision

    @property
    def recall(self) -> float:
        return self.steps.recall

    @property
    def f1(self) -> float:
        return self.steps.f1

    @property
    def category_agreement(self) -> float:
        """Of the steps both marked, the fraction with the same category (0.0 if none)."""
        tp = self.steps.true_positives
        return self.same_category / tp if tp else 0.0

    def format(self) -> str:
        """A small table for the terminal."""
        s = self.steps
        lines = [
            f"Oracle agreement over {self.rows} trajectories ({self.prediction_errors} predicted rows in error)",
            f"  steps: precision {s.precision:.3f}  recall {s.recall:.3f}  F1 {s.f1:.3f}  "
            f"(both {s.true_positives}, predicted {s.predicted}, reference {s.reference})",
            f"  same category on steps both marked: {self.category_agreement:.3f} "
            f"({self.same_category}/{s.true_positives})",
            f"  {'category':<22} {'P':>6} {'R':>6} {'F1':>6} {'pred':>5} {'ref':>5}",
        ]
        for name, c in self.per_category.items():
            lines.append(
                f"  {name:<22} {c.precision:>6.3f} {c.recall:>6.3f} {c.f1:>6.3f} {c.predicted:>5} {c.reference:>5}"
            )
        return "\n".join(lines)


def _rows(data: Any, name: str) -> list[dict[str, Any]]:
    """Rows as dicts with only the columns agreement needs."""
    wanted = (CRITICAL_STEPS, CRITICAL_CATEGORIES, ERROR, MESSAGES)
    if hasattr(data, "column_names"):  # a datasets.Dataset: read whole columns, not row by row
        if CRITICAL_STEPS not in data.column_names:
            raise InvalidInputError(
                f"The {name} dataset has no `critical_steps` column (columns: {data.column_names}); "
                "annotate it first (atlas-hf annotate, or CriticalStepAnnotator)."
            )
        cols = {c: data[c] for c in wanted if c in data.column_names}
        return [{c: v[i] for c, v in cols.items()} for i in range(len(data))]
    rows = list(data)
    for i, row in enumerate(rows):
        if CRITICAL_STEPS not in row:
            raise InvalidInputError(f"Row {i} of the {name} annotation has no `critical_steps` (keys: {sorted(row)}).")
    return rows


def _marks(row: dict[str, Any], index: int, name: str) -> dict[int, str | None]:
    steps = [int(s) for s in row.get(CRITICAL_STEPS) or []]
    categories = row.get(CRITICAL_CATEGORIES)
    if categories is None:
        categories = [None] * len(steps)
    if len(categories) != len(steps):
        raise InvalidInputError(
            f"Row {index} of the {name} annotation has {len(steps)} critical_steps but "
            f"{len(categories)} critical_categories; they must run parallel."
        )
    return dict(zip(steps, categories))


def oracle_agreement(predicted: Any, reference: Any) -> AgreementReport:
    """Compare `predicted` critical steps (and categories) with `reference`, row by row.

    Args:
        predicted (`datasets.Dataset` or `list[dict]`): Rows with `critical_steps` (and, for the
            category scores, `critical_categories`).
        reference (`datasets.Dataset` or `list[dict]`): The same trajectories, in the same order.

    Returns:
        `AgreementReport`: Step precision, recall and F1, and category agreement.

    Raises:
        `InvalidInputError`: The two differ in length, or, when both carry `messages`, a row holds
            another trajectory.
    """
    pred_rows, ref_rows = _rows(predicted, "predicted"), _rows(reference, "reference")
    if len(pred_rows) != len(ref_rows):
        raise InvalidInputError(
            f"predicted has {len(pred_rows)} rows but reference has {len(ref_rows)}; "
            "compare annotations of the same trajectories, in the same order."
        )
    steps = PRF()
    per_category = {c: PRF() for c in CATEGORIES}
    same, errors = 0, 0
    for i, (p_row, r_row) in enumerate(zip(pred_rows, ref_rows)):
        if MESSAGES in p_row and MESSAGES in r_row:
            if canonical_messages(p_row[MESSAGES]) != canonical_messages(r_row[MESSAGES]):
                raise InvalidInputError(
                    f"Row {i} holds different trajectories in predicted and reference; "
                    "the two must list the same trajectories in the same order."
                )
        if p_row.get(ERROR):
            errors += 1
            pred: dict[int, str | None] = {}
        else:
            pred = _marks(p_row, i, "predicted")
        ref = _marks(r_row, i, "reference")
        both = pred.keys() & ref.keys()
        steps.true_positives += len(both)
        steps.predicted += len(pred)
        steps.reference += len(ref)
        same += sum(1 for s in both if pred[s] is not None and pred[s] == ref[s])
        for s, c in pred.items():
            if c is not None:
                per_category.setdefault(c, PRF()).predicted += 1
                if ref.get(s) == c:
                    per_category[c].true_positives += 1
        for c in ref.values():
            if c is not None:
                per_category.setdefault(c, PRF()).reference += 1
    return AgreementReport(
        rows=len(pred_rows),
        steps=steps,
        same_category=same,
        per_category=per_category,
        prediction_errors=errors,
    )
