"""Render trajectories with the model's own chat template and label only the selected assistant turns.

The labelling works for any chat template, with or without `{% generation %}` markers: the text of
assistant turn `p` is the part of the full rendering between the rendering of `messages[:p]` with
the generation prompt (which ends with the assistant header) and the rendering of `messages[:p+1]`
(which ends with the template's end-of-turn marker). Characters are mapped to tokens through the
fast tokenizer's offsets, so the labels cover the turn's content, the tool calls as the template
renders them, and the end-of-turn marker, never the role header.
"""

from __future__ import annotations

import logging
import random
import re
import warnings
from bisect import bisect_left
from dataclasses import dataclass
from typing import Any, Sequence

from atlas_hf.chat_template import chat_template_of, end_of_turn_text, parse_tools, prepare_messages, render_chat
from atlas_hf.errors import InvalidInputError, TemplateError
from atlas_hf.schema import CRITICAL_STEPS, MESSAGES, ORACLE, assistant_indices, check_critical_steps, check_messages, num_steps
from atlas_hf.selection import LabellingOptions, StepSelection, TruncationSide, row_seed, select_steps

logger = logging.getLogger(__name__)

IGNORE_INDEX = -100

@dataclass
class LabelledTrajectory:
    """One trajectory tokenized for training.

    Attributes:
        input_ids (`list[int]`): The tokens fed forward.
        labels (`list[int]`): The token itself on supervised positions, `IGNORE_INDEX` elsewhere.
        num_truncated_steps (`int`): Selected steps that lost labelled tokens to `max_length`.
    """

    input_ids: list[int]
    labels: list[int]
    num_truncated_steps: int = 0

    @property
    def num_supervised(self) -> int:
        """Tokens that carry loss."""
        return sum(1 for label in self.labels if label != IGNORE_INDEX)


def assistant_turn_spans(
    tokenizer: Any,
    messages: Sequence[dict[str, Any]],
    steps: Sequence[int],
    tools: Any = None,
) -> tuple[str, list[tuple[int, int]]]:
    """The full rendering of `messages` and the character span of each of `steps` in it.

    A span starts after the assistant header and ends after the end-of-turn marker (trailing
    whitespace the template adds between turns excluded). `messages` must be prepared
    (see `prepare_messages`). Two renderings suffice for templates that write a turn's content
    verbatim (the content is fenced with markers once); others are read prefix by prefix.

    Args:
        tokenizer (`PreTrainedTokenizerBase`): The model's tokenizer, with a chat template.
        messages (`list[dict]`): Prepared turns.
        steps (`list[int]`): The assistant turns (0-based step indices) to locate.
        tools (`list[dict]` or `str`, *optional*): The row's tools, for the template.

    Returns:
        `tuple[str, list[tuple[int, int]]]`: The rendering and one `(start, end)` character span per step.

    Raises:
        `TemplateError`: The template renders a turn in a way that cannot be located.
    """
    tools = parse_tools(tools)
    full = render_chat(tokenizer, list(messages), tools, False)
    turns = assistant_indices(messages)
    bad = [s for s in steps if not 0 <= s < len(turns)]
    if bad:
        raise InvalidInputError(f"steps {bad} are out of range for a trajectory of {len(turns)} assistant steps "
                         f"(0..{len(turns) - 1}).")
    positions = [turns[s] for s in sorted(steps)]
    spans = _fenced_spans(tokenizer, messages, positions, tools, full)
    if spans is None:
        spans = _prefix_spans(tokenizer, messages, positions, tools, full)
    return full, spans


def _prefix_spans(
    tokenizer: Any, messages: Sequence[dict[str, Any]], positions: list[int], tools: Any, full: str
) -> list[tuple[int, int]]:
    """Spans read prefix by prefix: turn p lies between the rendering of `messages[:p]` with the
    generation prompt and the rendering of `messages[:p+1]`."""
    spans: list[tuple[int, int]] = []
    for p in positions:
        head = render_chat(tokenizer, list(messages[:p]), tools, True) if p > 0 else None
        upto = render_chat(tokenizer, list(messages[: p + 1]), tools, False)
        if head is None or not full.startswith(head) or not full.startswith(upto) or len(upto) < len(head):
            spans.append(_search_span(tokenizer, full, messages[p], spans[-1][1] if spans else 0))
            continue
        start, end = len(head), len(upto)
        while end > start and full[end - 1].isspace():
            end -= 1
        spans.append((start, end))
    return spans


_FENCE = "@@atlas{}{}@@"
_FENCE_RE = re.compile(r"@@atlas([SE])(\d+)@@")


def _fenced_spans(
    tokenizer: Any, messages: Sequence[dict[str, Any]], positions: list[int], tools: Any, full: str
) -> list[tuple[int, int]] | None:
    """Spans found in one rendering whose selected turns' content is fenced by markers, or None
    when the template does not write the content verbatim (the fenced rendering, markers removed,
    must equal the plain one) or has no end-of-turn marker to close a span with."""
    if not positions:
        return []
    eot = end_of_turn_text(tokenizer)
    if not eot:
        return None
    fenced = list(messages)
    for k, p in enumerate(positions):
        fenced[p] = {**messages[p], "content": _FENCE.format("S", k) + (messages[p].get("content") or "") + _FENCE.format("E", k)}
    try:
        text = render_chat(tokenizer, fenced, tools, False)
    except Exception:
        return None
    plain, starts, ends, removed, last = [], {}, {}, 0, 0
    for match in _FENCE_RE.finditer(text):
        plain.append(text[last : match.start()])
        where = match.start() - removed
        (starts if match.group(1) == "S" else ends)[int(match.group(2))] = where
        removed += match.end() - match.start()
        last = match.end()
    plain.append(text[last:])
    if "".join(plain) != full or len(starts) != len(positions) or len(ends) != len(positions):
        return None
    spans = []
    for k in range(len(positions)):
        close = full.find(eot, ends[k])
        bound = starts[k + 1] if k + 1 < len(positions) else len(full)
        if close < 0 or close >= bound:
            return None
        spans.append((starts[k], close + len(eot)))
    return spans


def _search_span(tokenizer: Any, full: str, message: dict[str, Any], after: int) -> tuple[int, int]:
    """Fallback for templates whose prefixes are not prefixes of the whole (e.g. ones that rewrite
    earlier turns): find the turn's content in the text, then the end-of-turn marker after it."""
    content = (message.get("content") or "").strip()
    start = full.find(content, after) if content else -1
    if start < 0:
        raise TemplateError(
            "The chat template renders an assistant turn in a way atlas_hf cannot locate (its text "
            f"{content[:60]!r} is not in the rendering). Use a template whose renderings of a "
            "conversation's prefixes are prefixes of its rendering."
        )
    end = start + len(content)
    eot = end_of_turn_text(tokenizer)
    if eot and full.startswith(eot, end):
        end += len(eot)
    return start, end


def label_trajectory(
    tokenizer: Any,
    messages: Sequence[dict[str, Any]],
    steps: Sequence[int],
    tools: Any = None,
    max_length: int | None = None,
    truncation_side: TruncationSide = "left",
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

    Returns:
        `LabelledTrajectory`: The tokens, labels and the count of truncated steps.

    Raises:
        `InvalidInputError`: `truncation_side` is neither.
        `TemplateError`: The template cannot render or locate a turn.
    """
    LabellingOptions(truncation_side=truncation_side)  # validates it
    full, spans = assistant_turn_spans(tokenizer, prepare_messages(tokenizer, messages), steps, tools)
    encoding = tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
    return _labels_from_spans(encoding["input_ids"], encoding["offset_mapping"], spans, max_length, truncation_side)


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


class CriticalStepLabeller:
    """A `datasets.map(batched=True)` function: trajectories in, `input_ids` and `labels` out.

    Rows need `messages` and, for `step_selection="critical"`, `critical_steps`; a `tools` column
    is passed to the template. The output adds `input_ids`, `labels`, `num_supervised` and
    `num_truncated_steps`. Picklable and deterministic, so `map` caches it and `num_proc` works.

    Args:
        tokenizer (`PreTrainedTokenizerFast`): A fast tokenizer (offset mappings) with a chat template.
        max_length (`int`, *optional*): The longest row kept (see `label_trajectory` for the cut).
        step_selection (`str`, defaults to `"critical"`): Which steps carry loss (`select_steps`).
        selection_ratio (`float`, *optional*): The ratio of `"random"` and `"non_critical"`; None reads
            each row's recorded cap (`LabellingOptions`).
        selection_seed (`int`, defaults to `0`): Seed of the random selections.
        truncation_side (`str`, defaults to `"left"`): Which end of a row over `max_length` is cut.

    Raises:
        `InvalidInputError`: A slow tokenizer, or an option out of range.
        `TemplateError`: The tokenizer has no chat template.

    Example:
        >>> tokenized = dataset.map(CriticalStepLabeller(tokenizer, max_length=4096), batched=True)
    """

    def __init__(
        self,
        tokenizer: Any,
        max_length: int | None = None,
        step_selection: StepSelection = "critical",
        selection_ratio: float | None = None,
        selection_seed: int = 0,
        truncation_side: TruncationSide = "left",
    ) -> None:
        if not getattr(tokenizer, "is_fast", False):
            raise InvalidInputError("CriticalStepLabeller needs a fast tokenizer (offset mappings); load it with use_fast=True.")
        chat_template_of(tokenizer)
        self.options = LabellingOptions(step_selection, selection_ratio, selection_seed, truncation_side, max_length)
        self.tokenizer = tokenizer

    @classmethod
    def from_options(cls, tokenizer: Any, options: LabellingOptions) -> "CriticalStepLabeller":
        """The labeller of `options` (built once, from an `AtlasSFTConfig` or the collator's arguments)."""
        return cls(tokenizer, options.max_length, options.step_selection, options.selection_ratio,
                   options.selection_seed, options.truncation_side)

    def selected_steps(self, messages: Sequence[dict[str, Any]], critical_steps: Sequence[int] | None,
                       oracle_column: str | None = None) -> list[int]:
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
        return select_steps(n, critical_steps or [], self.options.step_selection, self.options.ratio_for(oracle_column), rng)

    def render_row(self, row: dict[str, Any], index: int | str | None = None) -> tuple[str, list[tuple[int, int]]]:
        """One row's rendering and the character spans of its selected turns.

        Args:
            row (`dict`): `messages`, `critical_steps` (for the selections that read it), optional
                `tools` and `atlas_oracle`.
            index (`int` or `str`, *optional*): The row's index, for error messages.

        Returns:
            `tuple[str, list[tuple[int, int]]]`: The rendering and the spans (`assistant_turn_spans`).

        Raises:
            `TrajectoryError`: `messages` or `critical_steps` is malformed (the row, the field, the fix).
            `ValueError`: `critical_steps` is missing and the step selection needs it.
            `TemplateError`: The chat template cannot render the row.
        """
        messages = check_messages(row.get(MESSAGES), index)
        critical = row.get(CRITICAL_STEPS)
        if critical is None and self.options.step_selection in ("critical", "non_critical"):
            raise InvalidInputError(f"Row {index}: field 'critical_steps' is missing; annotate the dataset with "
                             "CriticalStepAnnotator first, or choose step_selection='all' or 'random'.")
        critical = check_critical_steps(critical, num_steps(messages), index)
        steps = self.selected_steps(messages, critical, row.get(ORACLE))
        try:
            return assistant_turn_spans(self.tokenizer, prepare_messages(self.tokenizer, messages), steps, row.get("tools"))
        except TemplateError as error:
            raise TemplateError(f"Row {index}: {error}") from None

    def label_rows(self, rows: Sequence[dict[str, Any]], indices: Sequence[int | str] | None = None) -> list[LabelledTrajectory]:
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
        encoding = self.tokenizer([text for text, _ in rendered], add_special_tokens=False, return_offsets_mapping=True)
        return [
            _labels_from_spans(ids, offsets, spans, self.options.max_length, self.options.truncation_side)
            for ids, offsets, (_, spans) in zip(encoding["input_ids"], encoding["offset_mapping"], rendered)
        ]

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
        }


class CriticalStepTokenizer(CriticalStepLabeller):
    """Deprecated: the old name of `CriticalStepLabeller` (it labels; it is not a tokenizer). Removed in 0.5."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        warnings.warn("CriticalStepTokenizer is renamed CriticalStepLabeller; the old name goes in atlas_hf 0.5.",
                      FutureWarning, stacklevel=2)
        super().__init__(*args, **kwargs)

