"""Render trajectories with the model's own chat template and label only the selected assistant turns.

The labelling works for any chat template, with or without `{% generation %}` markers: the text of
assistant turn `p` is the part of the full rendering between the rendering of `messages[:p]` with
the generation prompt (which ends with the assistant header) and the rendering of `messages[:p+1]`
(which ends with the template's end-of-turn marker). Characters are mapped to tokens through the
fast tokenizer's offsets, so the labels cover the turn's content, the tool calls as the template
renders them, and the end-of-turn marker, never the role header.
"""

from __future__ import annotations

import json
import logging
import random
from dataclasses import dataclass
from typing import Any, Literal, Sequence

from atlas_hf.selection import StepSelection, row_seed, select_steps

logger = logging.getLogger(__name__)

IGNORE_INDEX = -100
TruncationSide = Literal["left", "right"]

_PROBE_NAME = "atlas_probe_tool_7f3a"
_PROBE_ARGUMENT = "atlas_probe_value_91c2"
_tool_call_support: dict[str, bool] = {}
_warned_tool_calls: set[str] = set()


class TemplateError(ValueError):
    """A chat template could not render a trajectory."""


@dataclass
class LabelledTrajectory:
    """One trajectory tokenized for training."""

    input_ids: list[int]
    labels: list[int]
    num_truncated_steps: int = 0
    """Selected steps that lost labelled tokens to `max_length`."""

    @property
    def num_supervised(self) -> int:
        return sum(1 for label in self.labels if label != IGNORE_INDEX)


def _template_of(tokenizer: Any) -> str:
    template = getattr(tokenizer, "chat_template", None)
    if not template:
        raise TemplateError(
            f"The tokenizer {getattr(tokenizer, 'name_or_path', '')!r} has no chat template; set "
            "`tokenizer.chat_template` to the template the model was trained with."
        )
    return template


def _render(tokenizer: Any, messages: list[dict[str, Any]], tools: Any, add_generation_prompt: bool) -> str:
    return tokenizer.apply_chat_template(
        messages, tools=tools, tokenize=False, add_generation_prompt=add_generation_prompt
    )


def template_renders_tool_calls(tokenizer: Any) -> bool:
    """Whether the tokenizer's chat template writes an assistant turn's `tool_calls` into the text."""
    template = _template_of(tokenizer)
    if template not in _tool_call_support:
        probe = [
            {"role": "user", "content": "probe"},
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [
                    {
                        "id": "call_0",
                        "type": "function",
                        "function": {"name": _PROBE_NAME, "arguments": {"x": _PROBE_ARGUMENT}},
                    }
                ],
            },
        ]
        try:
            text = _render(tokenizer, probe, None, False)
            _tool_call_support[template] = _PROBE_NAME in text and _PROBE_ARGUMENT in text
        except Exception:
            _tool_call_support[template] = False
    return _tool_call_support[template]


def tool_calls_as_text(tool_calls: Sequence[dict[str, Any]]) -> str:
    """Tool calls written as text, for templates that would otherwise drop them."""
    parts = []
    for call in tool_calls:
        function = call.get("function", call)
        arguments = function.get("arguments")
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments)
            except json.JSONDecodeError:
                pass
        parts.append(
            "<tool_call>\n" + json.dumps({"name": function.get("name"), "arguments": arguments}) + "\n</tool_call>"
        )
    return "\n".join(parts)


def _parse_tools(tools: Any) -> list[dict[str, Any]] | None:
    if tools is None or tools == "" or tools == []:
        return None
    if isinstance(tools, str):
        return json.loads(tools)
    return list(tools)


def prepare_messages(tokenizer: Any, messages: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Messages ready for the template: null optional keys dropped (Arrow adds them to every turn),
    and, for templates that drop tool calls, the calls written into the turn's text (warned once)."""
    keep_calls = template_renders_tool_calls(tokenizer)
    prepared = []
    for message in messages:
        message = {k: v for k, v in message.items() if v is not None or k == "content"}
        calls = message.get("tool_calls")
        if calls and not keep_calls:
            template = _template_of(tokenizer)
            if template not in _warned_tool_calls:
                _warned_tool_calls.add(template)
                logger.warning(
                    "The chat template of %r does not render `tool_calls`; atlas_hf writes them into the "
                    "assistant turn's text as <tool_call>{json}</tool_call> so they are not lost.",
                    getattr(tokenizer, "name_or_path", ""),
                )
            text = message.get("content") or ""
            message["content"] = (text + "\n" if text else "") + tool_calls_as_text(calls)
            del message["tool_calls"]
        if message.get("content") is None:
            message["content"] = ""
        prepared.append(message)
    return prepared


def assistant_turn_spans(
    tokenizer: Any,
    messages: Sequence[dict[str, Any]],
    steps: Sequence[int],
    tools: Any = None,
) -> tuple[str, list[tuple[int, int]]]:
    """The full rendering of `messages` and the character span of each of `steps` in it.

    A span starts after the assistant header and ends after the end-of-turn marker (trailing
    whitespace the template adds between turns excluded). `messages` must be prepared
    (see `prepare_messages`).
    """
    tools = _parse_tools(tools)
    full = _render(tokenizer, list(messages), tools, False)
    positions = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
    spans = []
    for step in steps:
        p = positions[step]
        head = _render(tokenizer, list(messages[:p]), tools, True) if p > 0 else None
        upto = _render(tokenizer, list(messages[: p + 1]), tools, False)
        if head is None or not full.startswith(head) or not full.startswith(upto) or len(upto) < len(head):
            spans.append(_search_span(tokenizer, full, messages[p], spans[-1][1] if spans else 0))
            continue
        start, end = len(head), len(upto)
        while end > start and full[end - 1].isspace():
            end -= 1
        spans.append((start, end))
    return full, spans


def _end_of_turn(tokenizer: Any) -> str:
    """The text the template writes right after an assistant turn's content."""
    marker = "atlas_end_probe_5b1e"
    text = _render(tokenizer, [{"role": "user", "content": "probe"}, {"role": "assistant", "content": marker}], None, False)
    return text[text.index(marker) + len(marker) :].strip()


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
    eot = _end_of_turn(tokenizer)
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
    """
    messages = prepare_messages(tokenizer, messages)
    full, spans = assistant_turn_spans(tokenizer, messages, sorted(steps), tools)
    encoding = tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
    return _labels_from_spans(encoding["input_ids"], encoding["offset_mapping"], spans, max_length, truncation_side)


def _labels_from_spans(
    input_ids: list[int],
    offsets: list[tuple[int, int]],
    spans: list[tuple[int, int]],
    max_length: int | None,
    truncation_side: TruncationSide,
) -> LabelledTrajectory:
    labels = [IGNORE_INDEX] * len(input_ids)
    step_of_token = [-1] * len(input_ids)
    j = 0
    for step, (start, end) in enumerate(spans):
        while j < len(offsets) and offsets[j][0] < start:
            j += 1
        while j < len(offsets) and offsets[j][0] < end:
            if offsets[j][1] > offsets[j][0]:
                labels[j] = input_ids[j]
                step_of_token[j] = step
            j += 1
    last = max((i for i, label in enumerate(labels) if label != IGNORE_INDEX), default=-1)
    input_ids, labels, step_of_token = input_ids[: last + 1], labels[: last + 1], step_of_token[: last + 1]
    truncated = 0
    if max_length is not None and len(input_ids) > max_length:
        cut = slice(len(input_ids) - max_length, None) if truncation_side == "left" else slice(0, max_length)
        kept_steps = set(step_of_token[cut])
        truncated = sum(1 for s in set(step_of_token) - {-1} if s not in kept_steps or _partly_cut(step_of_token, cut, s))
        input_ids, labels = input_ids[cut], labels[cut]
        if not any(label != IGNORE_INDEX for label in labels):
            input_ids, labels = [], []
    return LabelledTrajectory(list(input_ids), list(labels), truncated)


def _partly_cut(step_of_token: list[int], cut: slice, step: int) -> bool:
    return step_of_token.count(step) != step_of_token[cut].count(step)


class CriticalStepTokenizer:
    """A `datasets.map(batched=True)` function: trajectories in, `input_ids` and `labels` out.

    Rows need `messages` and, for `step_selection="critical"`, `critical_steps`; a `tools` column
    is passed to the template. The output adds `input_ids`, `labels`, `num_supervised` and
    `num_truncated_steps`. Picklable and deterministic, so `map` caches it and `num_proc` works.

    Example:
        >>> tokenized = dataset.map(CriticalStepTokenizer(tokenizer, max_length=4096), batched=True)
    """

    def __init__(
        self,
        tokenizer: Any,
        max_length: int | None = None,
        step_selection: StepSelection = "critical",
        selection_ratio: float = 0.3,
        selection_seed: int = 0,
        truncation_side: TruncationSide = "left",
    ) -> None:
        if not getattr(tokenizer, "is_fast", False):
            raise TypeError("CriticalStepTokenizer needs a fast tokenizer (offset mappings); load it with use_fast=True.")
        _template_of(tokenizer)
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.step_selection = step_selection
        self.selection_ratio = selection_ratio
        self.selection_seed = selection_seed
        self.truncation_side = truncation_side

    def selected_steps(self, messages: Sequence[dict[str, Any]], critical_steps: Sequence[int] | None) -> list[int]:
        """The steps of one trajectory that carry loss under this configuration."""
        num_steps = sum(1 for m in messages if m["role"] == "assistant")
        rng = random.Random(row_seed(self.selection_seed, messages)) if self.step_selection in ("random", "non_critical") else None
        return select_steps(num_steps, critical_steps or [], self.step_selection, self.selection_ratio, rng)

    def label_row(self, row: dict[str, Any], index: int | None = None) -> LabelledTrajectory:
        """Label one row (`messages`, `critical_steps`, optional `tools`)."""
        messages = row.get("messages")
        if not messages:
            raise ValueError(f"Row {index}: field 'messages' is missing or empty; normalize the dataset with "
                             "atlas_hf.normalize_trajectories first.")
        critical = row.get("critical_steps")
        if critical is None and self.step_selection in ("critical", "non_critical"):
            raise ValueError(f"Row {index}: field 'critical_steps' is missing; annotate the dataset with "
                             "CriticalStepAnnotator first, or choose step_selection='all' or 'random'.")
        num_steps = sum(1 for m in messages if m["role"] == "assistant")
        bad = [s for s in critical or [] if not 0 <= int(s) < num_steps]
        if bad:
            raise ValueError(f"Row {index}: field 'critical_steps' has {bad}, out of range for a trajectory "
                             f"of {num_steps} assistant steps (0..{num_steps - 1}).")
        steps = self.selected_steps(messages, critical)
        try:
            return label_trajectory(self.tokenizer, messages, steps, row.get("tools"), self.max_length, self.truncation_side)
        except TemplateError as error:
            raise TemplateError(f"Row {index}: {error}") from None

    def __call__(self, batch: dict[str, list[Any]], indices: list[int] | None = None) -> dict[str, list[Any]]:
        size = len(batch["messages"])
        out: dict[str, list[Any]] = {"input_ids": [], "labels": [], "num_supervised": [], "num_truncated_steps": []}
        for i in range(size):
            row = {key: values[i] for key, values in batch.items()}
            labelled = self.label_row(row, indices[i] if indices else i)
            out["input_ids"].append(labelled.input_ids)
            out["labels"].append(labelled.labels)
            out["num_supervised"].append(labelled.num_supervised)
            out["num_truncated_steps"].append(labelled.num_truncated_steps)
        return out
