"""What every oracle returns, and the protocol it implements."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, Sequence, runtime_checkable

from atlas_hf.trajectories.schema import CRITICAL_CATEGORIES, CRITICAL_REASONS, CRITICAL_STEPS, ERROR, PLAN

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

    Attributes:
        steps (`list[int]`): 0-based indices over the assistant turns.
        categories (`list[str]`): One of `CATEGORIES` per step, parallel to `steps`.
        reasons (`list[str]`): One line per step on why it is critical.
        plan (`str`): The high-level plan the oracle wrote before choosing ("" for the baselines).
        error (`str`, *optional*): Why no valid answer could be had (the lists are then empty).
    """

    steps: list[int] = field(default_factory=list)
    categories: list[str] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)
    plan: str = ""
    error: str | None = None

    def to_columns(self) -> dict[str, Any]:
        """The row columns of `atlas_hf.trajectories.schema` (`critical_steps`, ..., `atlas_plan`, `atlas_error`)."""
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

    The built-in oracles subclass it (and inherit its documentation); any object with an `identity`
    and an `annotate` of this signature is an oracle too.
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

        An oracle whose requests cost time or money also takes `on_answer: Callable[[int, Annotation],
        None]` and calls it as each answer arrives, so `CriticalStepAnnotator` stores it at once.

        Args:
            trajectories (`list[list[dict]]`): The trajectories (`atlas_hf.trajectories.schema`), each with a step.
            max_ratio (`float`): The most steps to choose, as a fraction of a trajectory's steps
                (`max_selected_steps`); at least one.
            feedback (`list[str | None]`, *optional*): Per trajectory, the validation error of this
                oracle's previous answer; an oracle that can read it (an LLM) shows it so the retry
                can do better.

        Returns:
            `list[Annotation]`: One per trajectory. A failure the oracle cannot recover from is
            `Annotation(error=...)`, not an exception.
        """
        ...


def validate_annotation(annotation: Annotation, num_steps: int, max_ratio: float) -> str | None:
    """Why `annotation` is not a valid answer for a trajectory, or None.

    Indices must be ints in range and unique, categories from `CATEGORIES`, the lists parallel,
    at least one step and at most `max_selected_steps(num_steps, max_ratio)`.

    Args:
        annotation (`Annotation`): The answer.
        num_steps (`int`): The trajectory's number of steps.
        max_ratio (`float`): The ratio cap the oracle was given.

    Returns:
        `str | None`: The first problem, worded to be shown to the oracle on a retry; None if valid.
    """
    from atlas_hf.trajectories.schema import max_selected_steps

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
