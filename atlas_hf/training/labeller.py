"""Render trajectories with the model's chat template and label only the selected assistant turns.

Messages are made ready for the template (`chat_template.prepare_messages`), rendered with the
template training uses (`chat_template.training_template`: TRL's training version where TRL has
one), and the character spans of what the model writes in the selected turns
(`turn_spans.assistant_turn_spans`) are mapped to tokens through the fast tokenizer's offsets.
"""

from __future__ import annotations

import logging
import random
from bisect import bisect_left
from dataclasses import dataclass
from typing import Any, Sequence

from atlas_hf.training.chat_template import parse_tools, prepare_messages, template_profile
from atlas_hf.errors import InvalidInputError, TemplateError, TrajectoryError
from atlas_hf.trajectories.schema import (
    CRITICAL_STEPS,
    MESSAGES,
    ORACLE,
    check_critical_steps,
    check_messages,
    num_steps,
)
from atlas_hf.training.turn_spans import assistant_turn_spans
from atlas_hf.training.selection import LabellingOptions, TruncationSide, select_steps
from atlas_hf.trajectories.schema import row_seed

logger = logging.getLogger(__name__)

IGNORE_INDEX = -100


@dataclass
class LabelledTrajectory:
    """One trajectory tokenized for training.

    Attributes:
        input_ids (`list[int]`): The tokens fed forward.
        labels (`list[int]`): The token itself on supervised positions, `IGNORE_INDEX` elsewhere.
        num_truncated_steps (`int`): Selected steps that lost labelled tokens to `max_length`.
        num_rewritten_turns (`int`): Turns rewritten to fit the chat template (`prepare_messages`).
    """

    input_ids: list[int]
    labels: list[int]
    num_truncated_steps: int = 0
    num_rewritten_turns: int = 0

    @property
    def num_supervised(self) -> int:
        """Tokens that carry loss."""
        return sum(1 for label in self.labels if label != IGNORE_INDEX)


def label_trajectory(
    tokenizer: Any,
    messages: Sequence[dict[str, Any]],
    steps: Sequence[int],
    tools: Any = None,
    max_length: int | None = None,
    truncation_side: TruncationSide = "left",
    fit_template: bool = True,
) -> LabelledTrajectory:
    """Tokenize a trajectory and label the tokens of the assistant turns `steps` (0-based).

    Tokens after the last labelled token carry no loss in a causal LM and are dropped. A row
    still longer than `max_length` is cut on `truncation_side`: `"left"` (default) drops the oldest
    tokens, so the last selected turn always keeps its labels; `"right"` drops the newest, and may
    leave a row with no labelled token (the trainer then skips it). Either way the selected steps
    that lost labelled tokens are counted in `num_truncated_steps`.

    Args:
        tokenizer (`PreTrainedTokenizerFast`): A fast tokenizer with a chat template.
        messages (`list[dict]`): Canonical messages.
        steps (`list[int]`): The steps to label.
        tools (`list[dict]` or `str`, *optional*): The row's tools, for the template.
        max_length (`int`, *optional*): The longest row kept.
        truncation_side (`str`, defaults to `"left"`): `"left"` or `"right"`.
        fit_template (`bool`, defaults to `True`): Rewrite turns the template has no place for
            (`prepare_messages`); False raises instead.

    Returns:
        `LabelledTrajectory`: The tokens, labels and the counts of truncated steps and rewritten turns.

    Raises:
        `InvalidInputError`: `truncation_side` is neither.
        `TrajectoryError`: `messages` is malformed (e.g. tool-call arguments that are not JSON).
        `TemplateError`: The template cannot render or locate a turn.
    """
    LabellingOptions(truncation_side=truncation_side)  # validates it
    prepared = prepare_messages(tokenizer, check_messages(messages), fit_template)
    full, spans = assistant_turn_spans(tokenizer, prepared.messages, steps, parse_tools(tools))
    encoding = tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
    out = _labels_from_spans(encoding["input_ids"], encoding["offset_mapping"], spans, max_length, truncation_side)
    out.num_rewritten_turns = prepared.num_rewritten
    return out


def truncate_labelled(
    input_ids: Sequence[int], labels: Sequence[int], max_length: int | None, truncation_side: TruncationSide
) -> tuple[Sequence[int], Sequence[int]]:
    """A labelled row without the tokens after its last labelled one (they carry no loss), then cut.

    Args:
        input_ids (`Sequence[int]`): The row's tokens.
        labels (`Sequence[int]`): Its labels, one per token.
        max_length (`int`, *optional*): The longest row kept.
        truncation_side (`str`): `"left"` (drop the oldest tokens) or `"right"` (the newest).

    Returns:
        `tuple[Sequence[int], Sequence[int]]`: The cut tokens and labels; both empty when no labelled
        token is left.
    """
    last = len(labels)
    while last and labels[last - 1] == IGNORE_INDEX:
        last -= 1
    if last < len(labels):
        input_ids, labels = input_ids[:last], labels[:last]
    if max_length is not None and len(input_ids) > max_length:
        cut = slice(len(input_ids) - max_length, None) if truncation_side == "left" else slice(0, max_length)
        input_ids, labels = input_ids[cut], labels[cut]
        if all(label == IGNORE_INDEX for label in labels):
            return input_ids[:0], labels[:0]
    return input_ids, labels


def _labels_from_spans(
    input_ids: list[int],
    offsets: list[tuple[int, int]],
    spans: list[tuple[int, int]],
    max_length: int | None,
    truncation_side: TruncationSide,
) -> LabelledTrajectory:
    """Label the tokens that start inside a span, drop what follows the last one, and truncate."""
    starts = [start for start, _ in offsets]
    labels = [IGNORE_INDEX] * len(input_ids)
    step_of_token = [-1] * len(input_ids)
    for step, (start, end) in enumerate(spans):
        first, stop = bisect_left(starts, start), bisect_left(starts, end)
        labels[first:stop] = input_ids[first:stop]
        step_of_token[first:stop] = [step] * (stop - first)
    last = stop if spans else 0
    truncated = 0
    if max_length is not None and last > max_length:  # the selected steps that lose tokens to the cut
        removed = step_of_token[: last - max_length] if truncation_side == "left" else step_of_token[max_length:last]
        truncated = len(set(removed) - {-1})
    input_ids, labels = truncate_labelled(input_ids[:last], labels[:last], max_length, truncation_side)
    return LabelledTrajectory(list(input_ids), list(labels), truncated)


def check_label_length(input_ids: Sequence[int], labels: Sequence[int], row: Any) -> None:
    """Refuse a tokenized row whose `labels` are not one per token.

    Args:
        input_ids (`list[int]`): The row's tokens.
        labels (`list[int]`): Its labels.
        row (`int` or `str`): The row, for the message.

    Raises:
        `TrajectoryError`: The lengths differ (the row, the field and the fix named).
    """
    if len(labels) != len(input_ids):
        raise TrajectoryError(
            row,
            "labels",
            f"{len(labels)} labels for {len(input_ids)} input_ids; there must be one label per token.",
            "Label the rows with CriticalStepLabeller.",
        )


class CriticalStepLabeller:
    """A `datasets.map(batched=True)` function: trajectories in, `input_ids` and `labels` out.

    Rows need `messages` and, for `step_selection="critical"`, `critical_steps`; a `tools` column
    is passed to the template. The output adds `input_ids`, `labels`, `num_supervised` and
    `num_truncated_steps`. Picklable and deterministic, so `map` caches it and `num_proc` works.

    Args:
        tokenizer (`PreTrainedTokenizerFast`): A fast tokenizer (offset mappings) with a chat template.
        options (`LabellingOptions`, *optional*): Which steps carry loss, where a long row is cut, and
            whether turns the template has no place for are rewritten (`prepare_messages`; counted per
            row in `num_rewritten_turns`) or refused with a `TemplateError` naming the row.
        **overrides: `LabellingOptions` fields as keywords (`max_length=4096`, `step_selection="all"`).

    Raises:
        `InvalidInputError`: A slow tokenizer, or an option out of range.
        `TemplateError`: The tokenizer has no chat template, or one that cannot render a user turn.

    Example:
        >>> tokenized = dataset.map(CriticalStepLabeller(tokenizer, max_length=4096), batched=True)
    """

    def __init__(self, tokenizer: Any, options: LabellingOptions | None = None, **overrides: Any) -> None:
        if not getattr(tokenizer, "is_fast", False):
            raise InvalidInputError(
                "CriticalStepLabeller needs a fast tokenizer (offset mappings); load it with use_fast=True."
            )
        template_profile(tokenizer)
        self.options = LabellingOptions.resolve(options, overrides, "CriticalStepLabeller")
        self.tokenizer = tokenizer

    @classmethod
    def from_options(cls, tokenizer: Any, options: LabellingOptions) -> "CriticalStepLabeller":
        """The labeller of `options` (`CriticalStepLabeller(tokenizer, options)`)."""
        return cls(tokenizer, options)

    def selected_steps(
        self,
        messages: Sequence[dict[str, Any]],
        critical_steps: Sequence[int] | None,
        oracle_column: str | None = None,
    ) -> list[int]:
        """The steps of one trajectory that carry loss under this configuration.

        Args:
            messages (`list[dict]`): The trajectory.
            critical_steps (`list[int]`, *optional*): Its annotated critical steps.
            oracle_column (`str`, *optional*): Its `atlas_oracle` value, whose ratio cap `"random"` and
                `"non_critical"` select at when `selection_ratio` is None.

        Returns:
            `list[int]`: The selected step indices, sorted.
        """
        n = num_steps(messages)
        if not self.options.draws_at_ratio:
            return select_steps(n, critical_steps or [], self.options.step_selection)
        rng = random.Random(row_seed(self.options.selection_seed, messages))
        return select_steps(
            n, critical_steps or [], self.options.step_selection, self.options.ratio_for(oracle_column), rng
        )

    def render_row(
        self, row: dict[str, Any], index: int | str | None = None
    ) -> tuple[str, list[tuple[int, int]], int]:
        """One row's rendering, the character spans of its selected turns, and its rewritten turns.

        Args:
            row (`dict`): `messages`, `critical_steps` (for the selections that read it), optional
                `tools` and `atlas_oracle`.
            index (`int` or `str`, *optional*): The row's index, for error messages.

        Returns:
            `tuple[str, list[tuple[int, int]], int]`: The rendering, the spans (`assistant_turn_spans`) and
            the number of turns rewritten to fit the template (`prepare_messages`).

        Raises:
            `TrajectoryError`: `messages` or `critical_steps` is malformed (the row, the field, the fix).
            `ValueError`: `critical_steps` is missing and the step selection needs it.
            `TemplateError`: The chat template cannot render the row (the row and the family named).
        """
        messages = check_messages(row.get(MESSAGES), index)
        critical = row.get(CRITICAL_STEPS)
        if critical is None and self.options.reads_critical_steps:
            raise InvalidInputError(
                f"Row {index}: field 'critical_steps' is missing; annotate the dataset with "
                "CriticalStepAnnotator first, or choose step_selection='all' or 'random'."
            )
        critical = check_critical_steps(critical, num_steps(messages), index)
        steps = self.selected_steps(messages, critical, row.get(ORACLE))
        prepared = prepare_messages(self.tokenizer, messages, self.options.fit_template, index)
        try:
            tools = parse_tools(row.get("tools"))
        except ValueError:
            raise TrajectoryError(
                index, "tools", "is not JSON.", "Write the tool schemas as a list, or as that list in JSON."
            ) from None
        try:
            full, spans = assistant_turn_spans(self.tokenizer, prepared.messages, steps, tools)
        except TemplateError as error:
            raise TemplateError(f"Row {index}: {error}") from None
        return full, spans, prepared.num_rewritten

    def label_rows(
        self, rows: Sequence[dict[str, Any]], indices: Sequence[int | str] | None = None
    ) -> list[LabelledTrajectory]:
        """Label rows, tokenizing them in one batch.

        Args:
            rows (`list[dict]`): Rows as `render_row` reads them.
            indices (`list[int | str]`, *optional*): Their indices, for error messages.

        Returns:
            `list[LabelledTrajectory]`: One per row.

        Raises:
            See `render_row`.
        """
        rendered = [self.render_row(row, indices[i] if indices else i) for i, row in enumerate(rows)]
        encoding = self.tokenizer(
            [text for text, _, _ in rendered], add_special_tokens=False, return_offsets_mapping=True
        )
        labelled = []
        for ids, offsets, (_, spans, rewritten) in zip(encoding["input_ids"], encoding["offset_mapping"], rendered):
            out = _labels_from_spans(ids, offsets, spans, self.options.max_length, self.options.truncation_side)
            out.num_rewritten_turns = rewritten
            labelled.append(out)
        return labelled

    def label_row(self, row: dict[str, Any], index: int | str | None = None) -> LabelledTrajectory:
        """Label one row (see `label_rows`).

        Args:
            row (`dict`): The row.
            index (`int` or `str`, *optional*): Its index, for error messages.

        Returns:
            `LabelledTrajectory`: Its tokens and labels.
        """
        return self.label_rows([row], [index] if index is not None else None)[0]

    def __call__(self, batch: dict[str, list[Any]], indices: list[int] | None = None) -> dict[str, list[Any]]:
        rows = [dict(zip(batch, values)) for values in zip(*batch.values())]
        labelled = self.label_rows(rows, indices)
        return {
            "input_ids": [row.input_ids for row in labelled],
            "labels": [row.labels for row in labelled],
            "num_supervised": [row.num_supervised for row in labelled],
            "num_truncated_steps": [row.num_truncated_steps for row in labelled],
            "num_rewritten_turns": [row.num_rewritten_turns for row in labelled],
        }
