"""How every oracle reads a trajectory: its turns as text, its steps numbered, the four kinds defined.

The Claude prompt (`prompt.py`) and the local judges (`local.py`, the perplexity baseline) lay the
turns out differently, each for its reader, but they take the text of a turn, its tool calls, the
step numbers and the category definitions from here, so what one oracle is shown another is too.
Turns that do not fit a budget are clipped in the middle, never dropped, so step numbers hold.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Iterator, Mapping, Sequence

from atlas_hf.annotation.oracles.base import CATEGORIES


@dataclass(frozen=True)
class CategoryDefinition:
    """One kind of critical step, defined for two readers.

    Args:
        brief (`str`): One clause, for a small local judge with a short context.
        full (`str`): The definition an LLM oracle's system prompt gives, with examples.
    """

    brief: str
    full: str


CATEGORY_DEFINITIONS: dict[str, CategoryDefinition] = {
    "Plan Creation": CategoryDefinition(
        brief="the agent lays out sub-goals and a path to the task's goal",
        full="the agent lays out sub-goals and a path to the task's goal: it decomposes the task, "
        "decides what to find out or do first, or re-plans the remaining route.",
    ),
    "Critical Observation": CategoryDefinition(
        brief="the agent picks out and analyses information in an observation that changes its "
        "understanding of the goal or the state",
        full="the agent picks out and analyses the information in an observation that changes its "
        "understanding of the goal or of the state: it notices the key fact, a constraint, a "
        "mismatch, or the piece of evidence the rest of the trajectory depends on.",
    ),
    "Critical Action": CategoryDefinition(
        brief="an action that moves the task decisively toward the goal",
        full="an action that moves the task decisively toward the goal: the search that finds the "
        "answer, the tool call that commits the change the user asked for, the final answer.",
    ),
    "Self Correction": CategoryDefinition(
        brief="after a failure or a poor result the agent reflects and changes course",
        full="after a failure, an error message or a poor result, the agent reflects on what went "
        "wrong and changes course (a new query, another tool, a fixed argument, a revised plan).",
    ),
}
"""The four kinds of critical step (`CATEGORIES`, in that order), each briefly and in full."""

if tuple(CATEGORY_DEFINITIONS) != CATEGORIES:  # pragma: no cover - a guard for whoever edits either
    raise AssertionError("CATEGORY_DEFINITIONS must define exactly CATEGORIES, in order.")


def content_text(content: Any) -> str:
    """The text of a turn's `content`: a string, None, or OpenAI-style content parts (their text, joined).

    Args:
        content (`str`, `list[dict]` or `None`): The turn's content.

    Returns:
        `str`: The text; "" for None. Parts are joined as `atlas_hf.trajectories.schema.check_messages` joins them,
        so an oracle reads the text the student is trained on.
    """
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, (list, tuple)):
        return "".join(str(p.get("text") or "") if isinstance(p, Mapping) else str(p) for p in content)
    return str(content)


def tool_calls(message: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The `(name, arguments)` of each tool call of a turn, the arguments as JSON text.

    Args:
        message (`dict`): One chat turn; OpenAI tool calls (`{"function": {"name", "arguments"}}`) or
            flat ones (`{"name", "arguments"}`).

    Returns:
        `list[tuple[str, str]]`: One pair per call; arguments given as a dict are written as JSON in
        their own key order.
    """
    calls = []
    for call in message.get("tool_calls") or []:
        function = call.get("function") or call
        arguments = function.get("arguments", "")
        if not isinstance(arguments, str):
            arguments = json.dumps(arguments, ensure_ascii=False)
        calls.append((str(function.get("name", "?")), arguments))
    return calls


def numbered_turns(messages: Sequence[Mapping[str, Any]]) -> Iterator[tuple[int | None, Mapping[str, Any]]]:
    """Each turn with its step number: 0, 1, ... on assistant turns, None on the others.

    Args:
        messages (`list[dict]`): The trajectory.

    Returns:
        `Iterator[tuple[int | None, dict]]`: `(step, turn)` pairs, every turn, in order.
    """
    step = 0
    for message in messages:
        if message.get("role") == "assistant":
            yield step, message
            step += 1
        else:
            yield None, message


_ROLE_LABELS = {"system": "System", "user": "User", "assistant": "Assistant", "tool": "Tool"}


def role_label(message: Mapping[str, Any]) -> str:
    """`User`, `Assistant`, `Tool (name)`, ... for one chat turn (the local judges' plain-text layout)."""
    role = str(message.get("role", ""))
    label = _ROLE_LABELS.get(role, role.capitalize() or "Turn")
    return f"{label} ({message['name']})" if role == "tool" and message.get("name") else label


def plain_turn_text(message: Mapping[str, Any]) -> str:
    """A turn's body as the local judges read it: its text, then one `call name(args)` line per tool call."""
    text = content_text(message.get("content"))
    lines = [text] if text else []
    lines += [f"call {name}({arguments})" for name, arguments in tool_calls(message)]
    return "\n".join(lines)


def clip_text_middle(text: str, max_chars: int) -> str:
    """`text` cut in the middle to fit `max_chars`.

    Args:
        text (`str`): The text.
        max_chars (`int`): The most characters kept; 0 or less keeps everything.

    Returns:
        `str`: `text` itself if it fits, else its head and tail around a marker that says how many
        characters were cut.
    """
    if max_chars <= 0 or len(text) <= max_chars:
        return text
    head = max_chars // 2
    tail = max_chars - head
    clipped = len(text) - head - tail
    return f"{text[:head]}\n[... {clipped} characters clipped ...]\n{text[len(text) - tail :]}"


CLIP_MARKER = " [...] "
"""Text put where the middle of a turn was cut out to fit a token budget."""


def clip_ids_middle(ids: list[int], cap: int, marker: list[int]) -> list[int]:
    """`ids` cut to at most `cap` tokens by removing the middle.

    Args:
        ids (`list[int]`): The tokens.
        cap (`int`): The most tokens kept.
        marker (`list[int]`): Put where the middle was (when there is room for it and a head and tail).

    Returns:
        `list[int]`: `ids` itself if it fits, else the head, the marker and the tail.
    """
    if len(ids) <= cap:
        return ids
    keep = cap - len(marker)
    if keep < 2:
        return ids[:cap]
    head = (keep + 1) // 2
    return ids[:head] + marker + ids[len(ids) - (keep - head) :]


def fit_turns(turns: list[list[int]], budget: int, clippable: Sequence[bool], marker: list[int]) -> list[list[int]]:
    """Clip the longest `clippable` turns in the middle to one common cap so the total fits `budget`.

    Args:
        turns (`list[list[int]]`): Each turn's token ids.
        budget (`int`): The most tokens all turns together may have.
        clippable (`list[bool]`): Which turns may be clipped (the observations); when the others
            alone exceed the budget, every turn is.
        marker (`list[int]`): The ids put where a turn's middle was cut.

    Returns:
        `list[list[int]]`: As many turns as given, none dropped.
    """
    if sum(len(t) for t in turns) <= budget:
        return turns
    fixed = sum(len(t) for t, c in zip(turns, clippable) if not c)
    if fixed > budget:
        return fit_turns(turns, budget, [True] * len(turns), marker)
    room = budget - fixed
    lengths = [len(t) for t, c in zip(turns, clippable) if c]
    low, high = 0, max(lengths)  # the largest cap whose clipped total fits the room
    while low < high:
        mid = (low + high + 1) // 2
        if sum(min(n, mid) for n in lengths) <= room:
            low = mid
        else:
            high = mid - 1
    return [clip_ids_middle(t, low, marker) if c else t for t, c in zip(turns, clippable)]
