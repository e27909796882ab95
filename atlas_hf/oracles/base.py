"""What every oracle returns, and the protocol it implements."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, Sequence, runtime_checkable

from atlas_hf.schema import CRITICAL_CATEGORIES, CRITICAL_REASONS, CRITICAL_STEPS, ERROR, PLAN

CATEGORIES: tuple[str, ...] = (
    "Plan Creation",
    "Critical Observation",
    "Critical Action",
    "Self Correction",
)
"""The four kinds of critical step of the ATLaS paper."""


@dataclass
class Annotation:
    """One trajectory's critical steps, as an oracle chose them.

    `steps` are 0-based indices over the assistant turns; `categories` and `reasons` run parallel
    to `steps`. `error` is set (and the lists left empty) when no valid answer could be had.
    """

    steps: list[int] = field(default_factory=list)
    categories: list[str] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)
    plan: str = ""
    error: str | None = None

    def to_columns(self) -> dict[str, Any]:
        """The row columns of `atlas_hf.schema` (`critical_steps`, ..., `atlas_plan`, `atlas_error`)."""
        return {
            CRITICAL_STEPS: list(self.steps),
            CRITICAL_CATEGORIES: list(self.categories),
            CRITICAL_REASONS: list(self.reasons),
            PLAN: self.plan,
            ERROR: self.error,
        }


@runtime_checkable
class Oracle(Protocol):
    """Chooses the critical steps of trajectories.

    `identity` names the oracle, its model and its prompt version; it keys the annotation cache,
    so two oracles that could answer differently must never share one. An oracle that always
    chooses at one ratio whatever cap it is given (the all-steps baseline) sets a `fixed_ratio`
    attribute; the annotator then records that ratio instead of the cap. An oracle that counts what
    it uses has a `usage` whose `progress_fields()` gives the few fields a progress bar shows
    (`{"tokens": "1,250", "cost": "$0.0123"}`); see `usage_fields`.
    """

    @property
    def identity(self) -> str: ...

    def annotate(
        self,
        trajectories: Sequence[list[dict[str, Any]]],
        max_ratio: float,
        feedback: Sequence[str | None] | None = None,
    ) -> list[Annotation]:
        """Annotate a batch of canonical `messages` lists, one `Annotation` each, in order.

        `feedback[i]`, when given, is the validation error of this oracle's previous answer for
        trajectory i; an oracle that can read it (an LLM) shows it so the retry can do better.
        An oracle reports a failure it cannot recover from as `Annotation(error=...)`, not by raising.
        An oracle whose requests cost time or money also takes `on_answer: Callable[[int, Annotation],
        None]` and calls it as each answer arrives, so `CriticalStepAnnotator` stores it at once.
        """
        ...


def validate_annotation(annotation: Annotation, num_steps: int, max_ratio: float) -> str | None:
    """Why `annotation` is not a valid answer for a trajectory of `num_steps` steps, or None.

    Indices must be ints in range and unique, categories from `CATEGORIES`, the lists parallel,
    at least one step and at most `max_selected_steps(num_steps, max_ratio)`.
    """
    from atlas_hf.selection import max_selected_steps

    steps, cats, reasons = annotation.steps, annotation.categories, annotation.reasons
    if annotation.error:
        return annotation.error
    if not (len(steps) == len(cats) == len(reasons)):
        return f"steps, categories and reasons differ in length ({len(steps)}, {len(cats)}, {len(reasons)})."
    bad = [s for s in steps if isinstance(s, bool) or not isinstance(s, int) or not 0 <= s < num_steps]
    if bad:
        return f"step indices {bad} are out of range: the trajectory has steps 0..{num_steps - 1}."
    if len(set(steps)) != len(steps):
        return f"step indices {steps} repeat a step."
    unknown = [c for c in cats if c not in CATEGORIES]
    if unknown:
        return f"categories {unknown} are not among {list(CATEGORIES)}."
    cap = max_selected_steps(num_steps, max_ratio)
    if not steps:
        return "no step was chosen: choose at least one."
    if len(steps) > cap:
        return f"{len(steps)} steps were chosen but at most {cap} of {num_steps} may be (ratio {max_ratio})."
    return None


def usage_fields(oracle: Any) -> dict[str, str]:
    """What `oracle` reports of its own usage, for progress bars and summaries: its
    `usage.progress_fields()`, or `{}` for an oracle that counts nothing.

    Args:
        oracle (`Oracle`): Any oracle.

    Returns:
        `dict[str, str]`: Field name to display text.
    """
    usage = getattr(oracle, "usage", None)
    fields = getattr(usage, "progress_fields", None)
    return dict(fields()) if callable(fields) else {}

