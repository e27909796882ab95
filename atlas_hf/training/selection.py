"""Which steps carry loss: the paper's baseline selections and the labelling options.

The ratio cap (`DEFAULT_MAX_RATIO`, `max_selected_steps`) is the contract between the oracle and the
selections, so it sits in `atlas_hf.trajectories.schema` beside the `atlas_oracle` column that records it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, fields, replace
from typing import Any, Iterable, Literal, Mapping, Sequence, get_args

from atlas_hf.errors import InvalidInputError
from atlas_hf.trajectories.schema import DEFAULT_MAX_RATIO, max_selected_steps, parse_oracle_column

StepSelection = Literal["critical", "all", "random", "non_critical"]
STEP_SELECTIONS: tuple[str, ...] = get_args(StepSelection)
RATIO_SELECTIONS: tuple[str, ...] = ("random", "non_critical")
"""The selections that draw steps at random, at `selection_ratio`."""
ANNOTATED_SELECTIONS: tuple[str, ...] = ("critical", "non_critical")
"""The selections that read each row's `critical_steps` (the others need no annotation)."""
TruncationSide = Literal["left", "right"]


@dataclass(frozen=True)
class LabellingOptions:
    """How rows are labelled: which steps carry loss and where a long row is cut, validated once.

    The one description of labelling that `AtlasSFTConfig` (`args.labelling_options`),
    `CriticalStepLabeller`, `CriticalStepDataCollator` and `label_dataset` all take; the labeller and the
    collator also accept its fields as keywords (`CriticalStepLabeller(tokenizer, max_length=4096)`).

    Args:
        step_selection (`str`): `"critical"`, `"all"`, `"random"` or `"non_critical"`.
        selection_ratio (`float`, *optional*): Fraction of the steps `"random"` and `"non_critical"` select,
            in (0, 1]. None: the ratio cap each row's annotation recorded (`atlas_oracle`), so the
            baselines supervise as many steps as the oracle was allowed to mark; `DEFAULT_MAX_RATIO`
            for rows that record none.
        selection_seed (`int`): Seed of the random selections.
        truncation_side (`str`): `"left"` (drop the oldest tokens) or `"right"` (the newest).
        max_length (`int`, *optional*): The longest row kept.
        fit_template (`bool`): Rewrite turns the chat template has no place for (a system prompt, tool
            results, tool calls) to fit it (`atlas_hf.training.chat_template.prepare_messages`); False raises.

    Raises:
        `InvalidInputError`: A value out of its range, named with the accepted ones.
    """

    step_selection: StepSelection = "critical"
    selection_ratio: float | None = None
    selection_seed: int = 0
    truncation_side: TruncationSide = "left"
    max_length: int | None = None
    fit_template: bool = True

    def __post_init__(self) -> None:
        if self.step_selection not in STEP_SELECTIONS:
            raise InvalidInputError(f"step_selection must be one of {STEP_SELECTIONS}, got {self.step_selection!r}.")
        if self.selection_ratio is not None and not 0.0 < self.selection_ratio <= 1.0:
            raise InvalidInputError(f"selection_ratio must be in (0, 1] or None, got {self.selection_ratio!r}.")
        if self.truncation_side not in ("left", "right"):
            raise InvalidInputError(f"truncation_side must be 'left' or 'right', got {self.truncation_side!r}.")
        if self.max_length is not None and self.max_length < 1:
            raise InvalidInputError(f"max_length must be positive or None, got {self.max_length!r}.")

    @property
    def reads_critical_steps(self) -> bool:
        """Whether the selection reads each row's `critical_steps` (`ANNOTATED_SELECTIONS`)."""
        return self.step_selection in ANNOTATED_SELECTIONS

    @property
    def draws_at_ratio(self) -> bool:
        """Whether the selection draws steps at random at a ratio (`RATIO_SELECTIONS`)."""
        return self.step_selection in RATIO_SELECTIONS

    def ratio_for(self, oracle_column: str | None) -> float:
        """The ratio `"random"` and `"non_critical"` select at, for a row with this `atlas_oracle` value."""
        if self.selection_ratio is not None:
            return self.selection_ratio
        return parse_oracle_column(oracle_column)[1] or DEFAULT_MAX_RATIO

    def ratios_used(self, oracle_columns: Iterable[str | None]) -> tuple[float, ...]:
        """The ratios rows with these `atlas_oracle` values are drawn at, sorted; () when the selection
        draws nothing at a ratio (`"critical"`, `"all"`)."""
        if not self.draws_at_ratio:
            return ()
        return tuple(sorted({self.ratio_for(value) for value in oracle_columns}))

    @classmethod
    def resolve(
        cls, options: "LabellingOptions | None", overrides: Mapping[str, Any], owner: str
    ) -> "LabellingOptions":
        """`options` (default ones when None) with `overrides`, its fields given as keywords.

        Args:
            options (`LabellingOptions`, *optional*): The options passed.
            overrides (`Mapping[str, Any]`): Field values that replace those of `options`.
            owner (`str`): Who was called, for the error message.

        Returns:
            `LabellingOptions`: The options, validated.

        Raises:
            `InvalidInputError`: A keyword that is no field, or a value out of its range.
        """
        names = [f.name for f in fields(cls)]
        unknown = sorted(set(overrides) - set(names))
        if unknown:
            raise InvalidInputError(f"{owner} got unexpected keyword(s) {unknown}; the labelling options are {names}.")
        if options is not None and not isinstance(options, cls):
            raise InvalidInputError(
                f"{owner}: options must be a LabellingOptions, got {type(options).__name__} "
                "(from an AtlasSFTConfig: config.labelling_options)."
            )
        return replace(options or cls(), **overrides)

    @classmethod
    def from_config(cls, args: Any) -> "LabellingOptions":
        """The options an `AtlasSFTConfig` (or any object with these fields) sets."""
        return cls(
            args.step_selection,
            args.selection_ratio,
            args.selection_seed,
            args.truncation_side,
            args.max_length,
            getattr(args, "fit_template", True),
        )


def select_steps(
    num_steps: int,
    critical_steps: Sequence[int],
    selection: StepSelection = "critical",
    ratio: float = DEFAULT_MAX_RATIO,
    rng: random.Random | None = None,
) -> list[int]:
    """The sorted step indices that carry loss under `selection`.

    - `"critical"`: the annotated critical steps, as they are.
    - `"all"`: every step (full-trajectory SFT).
    - `"random"`: random steps, as many as `max_selected_steps(num_steps, ratio)`.
    - `"non_critical"`: random steps among those not annotated critical, at the same count.

    Args:
        num_steps (`int`): The trajectory's number of steps.
        critical_steps (`list[int]`): Its annotated critical steps.
        selection (`str`, defaults to `"critical"`): One of `STEP_SELECTIONS`.
        ratio (`float`, defaults to `DEFAULT_MAX_RATIO`): The ratio of `"random"` and `"non_critical"`.
        rng (`random.Random`, *optional*): The draw's generator (seeded 0 when None).

    Returns:
        `list[int]`: The selected steps, sorted.

    Raises:
        `InvalidInputError`: An unknown `selection`, or `ratio` out of (0, 1].
    """
    if selection == "critical":
        return sorted({int(s) for s in critical_steps if 0 <= int(s) < num_steps})
    if selection == "all":
        return list(range(num_steps))
    if selection not in STEP_SELECTIONS:
        raise InvalidInputError(f"step_selection must be one of {STEP_SELECTIONS}, got {selection!r}.")
    rng = rng or random.Random(0)
    k = max_selected_steps(num_steps, ratio)
    pool = list(range(num_steps))
    if selection == "non_critical":
        critical = set(int(s) for s in critical_steps)
        pool = [s for s in pool if s not in critical]
    return sorted(rng.sample(pool, min(k, len(pool))))
