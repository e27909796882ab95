"""The selector prompt: how an LLM oracle is asked for a trajectory's critical steps.

The oracle sees a static prefix (the system prompt and the answer tool, identical for every
trajectory, so it can be prompt-cached) and one user message per trajectory: the trajectory with
its assistant turns numbered "Step 0", "Step 1", ... and the observations in between, then the
request to write a plan first and choose at most `max_selected_steps(n, ratio)` steps (at least
one). The answer comes back as the input of a forced tool call, never parsed out of free text.

Shortening: an observation (a system, user or tool message) longer than
`max_chars_per_observation` characters keeps its head and tail and loses its middle, replaced by
a marker that says how many characters were clipped. Assistant turns (the steps) are never
clipped and no turn is ever dropped, so step numbers always match the trajectory.
"""

from __future__ import annotations

import json
import re
from typing import Any, Mapping, Sequence

from atlas_hf.annotation.oracles.base import CATEGORIES, Annotation
from atlas_hf.annotation.oracles.rendering import (
    CATEGORY_DEFINITIONS,
    clip_text_middle,
    content_text,
    numbered_turns,
    tool_calls,
)
from atlas_hf.trajectories.schema import max_selected_steps, num_steps

PROMPT_VERSION = "atlas-selector-v1"
"""Stored with every annotation and part of the cache key: bump it whenever the prompt changes."""

TOOL_NAME = "record_critical_steps"
DEFAULT_MAX_CHARS_PER_OBSERVATION = 2000

SYSTEM_PROMPT = f"""You are an expert judge of AI agent trajectories. You help build training data \
for agents by finding the critical steps of expert trajectories: the few steps that a student \
agent most needs to learn from. The student is trained on the whole trajectory as context, but \
learns only from the steps you choose, so choose the steps that carry the reasoning and the \
decisions that solved the task, not the routine or incidental ones.

## What you are shown
A trajectory is a conversation between an agent and its environment. Each assistant turn of the \
agent is one step, numbered from 0: "Step 0", "Step 1", and so on. A step holds the agent's \
thought and its action, which may be text, a tool call (shown as `Tool call: name(arguments)`), \
or both. The observations between steps are what the agent saw: the task, user replies, tool \
results and environment feedback. Very long observations are clipped in the middle; the marker \
`[... N characters clipped ...]` shows where. Steps themselves are never clipped or removed.

## The four kinds of critical step
{chr(10).join(f"- {name}: {definition.full}" for name, definition in CATEGORY_DEFINITIONS.items())}

## How to choose
1. First read the whole trajectory and write a short high-level plan of how the task is solved: \
the goal and its sub-goals, in two to five sentences. Write it before choosing any step.
2. Then choose the critical steps. Prefer steps that (a) set the direction of the work, (b) \
extract the decisive fact from an observation, (c) perform the decisive action, or (d) recover \
from a mistake. Skip greetings, confirmations, repeated or redundant actions, and steps whose \
content any agent would produce without thought.
3. Respect the limit given with the trajectory: choose at most that many steps and at least one. \
Fewer is fine when fewer steps matter.
4. Give each chosen step exactly one of the four categories, the one that best describes why it \
matters, and a one-line reason that names what the step does for the task.
5. Use the step numbers exactly as shown. Each step at most once.

## How to answer
Call the tool `{TOOL_NAME}` once, with the plan first and then the chosen steps in increasing \
order of step number. Do not answer in plain text.

## Example
For a question-answering trajectory where Step 0 searches for the wrong entity, Step 1 notices \
from the search result that a different entity is meant and searches again, Step 2 reads the \
birth date off the new result, and Step 3 answers, with a limit of 2 steps, a good answer is: \
plan "Identify the entity the question refers to, find its birth date, and answer with it."; \
steps: Step 1 (Self Correction: realises the first search targeted the wrong entity and \
redirects the search), Step 3 (Critical Action: submits the birth date found as the final answer).
"""

ANSWER_TOOL: dict[str, Any] = {
    "name": TOOL_NAME,
    "description": (
        "Record the high-level plan of the trajectory and its critical steps. The plan comes "
        "first; each critical step has its step number, one of the four categories and a "
        "one-line reason."
    ),
    "input_schema": {
        "type": "object",
        "properties": {
            "plan": {
                "type": "string",
                "description": "A short high-level plan of the trajectory: the goal and its sub-goals.",
            },
            "critical_steps": {
                "type": "array",
                "description": "The chosen critical steps, in increasing order of step number.",
                "items": {
                    "type": "object",
                    "properties": {
                        "step": {"type": "integer", "description": "The step number as shown (0-based)."},
                        "category": {"type": "string", "enum": list(CATEGORIES)},
                        "reason": {"type": "string", "description": "One line: why this step is critical."},
                    },
                    "required": ["step", "category", "reason"],
                    "additionalProperties": False,
                },
            },
        },
        "required": ["plan", "critical_steps"],
        "additionalProperties": False,
    },
}
"""The answer tool's definition (the oracle puts `cache_control` on the system block after it, which
caches the tools and the system prompt together)."""


_BLOCK_MARKER = re.compile(r"^(###|---)", re.MULTILINE)
_FRAME_TAG = re.compile(r"<(/?)(trajectory)>", re.IGNORECASE)


def inert(text: str) -> str:
    """`text` with the prompt's own structure made inert: a line that starts like a block header
    ("### Step 99", "--- Observation") is escaped with a backslash, and `<trajectory>` tags lose
    their brackets' meaning (`<trajectory_>`), so no turn can open, close or renumber a block."""
    return _FRAME_TAG.sub(r"<\1\2_>", _BLOCK_MARKER.sub(r"\\\1", text))


def render_trajectory_for_oracle(
    messages: Sequence[Mapping[str, Any]],
    max_chars_per_observation: int = DEFAULT_MAX_CHARS_PER_OBSERVATION,
) -> str:
    """The trajectory as the oracle reads it: numbered steps, observations in between.

    Assistant turns become "### Step i" blocks (text, then one `Tool call:` line per tool call);
    system, user and tool turns become observation blocks, clipped in the middle beyond
    `max_chars_per_observation` characters (0 disables clipping). No turn is ever dropped.

    Args:
        messages (`list[dict]`): The trajectory.
        max_chars_per_observation (`int`, defaults to `2000`): The longest observation kept whole.

    Returns:
        `str`: The blocks, separated by blank lines.
    """
    blocks: list[str] = []
    for step, message in numbered_turns(messages):
        text = inert(content_text(message.get("content")))
        if step is not None:
            lines = [text] if text else []
            lines += [inert(f"Tool call: {name}({arguments})") for name, arguments in tool_calls(message)]
            blocks.append(f"### Step {step}\n" + ("\n".join(lines) if lines else "(empty turn)"))
            continue
        role = message.get("role")
        if role == "tool":
            name = message.get("name")
            label = f"Observation (result of tool {name})" if name else "Observation (tool result)"
        elif role == "system":
            label = "Observation (system instructions given to the agent)"
        else:
            label = "Observation"
        blocks.append(f"--- {label}\n{clip_text_middle(text, max_chars_per_observation)}")
    return "\n\n".join(blocks)


def build_user_message(
    messages: Sequence[Mapping[str, Any]],
    max_ratio: float,
    feedback: str | None = None,
    max_chars_per_observation: int = DEFAULT_MAX_CHARS_PER_OBSERVATION,
) -> str:
    """The per-trajectory user message: the rendered trajectory, the cap, and any feedback.

    Args:
        messages (`list[dict]`): The trajectory.
        max_ratio (`float`): The ratio cap, stated as a number of steps.
        feedback (`str`, *optional*): Why the previous answer was rejected.
        max_chars_per_observation (`int`, defaults to `2000`): The longest observation kept whole.

    Returns:
        `str`: The message text.
    """
    n = num_steps(messages)
    cap = max_selected_steps(n, max_ratio)
    text = (
        f"Here is the trajectory. It has {n} steps, numbered Step 0 to Step {n - 1}.\n\n"
        f"<trajectory>\n{render_trajectory_for_oracle(messages, max_chars_per_observation)}\n</trajectory>\n\n"
        f"Write the high-level plan first, then choose the critical steps: at most {cap} of the "
        f"{n} steps, and at least one. Answer by calling the tool `{TOOL_NAME}`."
    )
    if feedback:
        text += f"\n\nYour previous answer for this trajectory was rejected: {feedback}\nAnswer again and fix this."
    return text


def _as_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value.strip())
    return None


def parse_tool_input(tool_input: Any) -> Annotation:
    """The `Annotation` an answer tool call's input stands for, as the model said it.

    Out-of-range steps, unknown categories and cap overruns are kept as they are (the annotator's
    `validate_annotation` judges them); input that cannot be read as an answer at all becomes
    `Annotation(error=...)` saying what was wrong.
    """
    if not isinstance(tool_input, Mapping):
        return Annotation(error=f"the answer tool input is a {type(tool_input).__name__}, not an object.")
    items = tool_input.get("critical_steps")
    if isinstance(items, str):
        try:
            items = json.loads(items)
        except json.JSONDecodeError:
            return Annotation(error="`critical_steps` is a string that is not a JSON list.")
    if not isinstance(items, list):
        return Annotation(
            error=f"`critical_steps` must be a list of {{step, category, reason}} objects, got {type(items).__name__}."
        )
    plan = tool_input.get("plan", "")
    annotation = Annotation(plan=plan if isinstance(plan, str) else json.dumps(plan, ensure_ascii=False))
    for position, item in enumerate(items):
        if not isinstance(item, Mapping):
            return Annotation(error=f"`critical_steps[{position}]` is a {type(item).__name__}, not an object.")
        step = _as_int(item.get("step"))
        if step is None:
            return Annotation(error=f"`critical_steps[{position}].step` is {item.get('step')!r}, not an integer.")
        annotation.steps.append(step)
        annotation.categories.append(str(item.get("category", "")))
        annotation.reasons.append(str(item.get("reason", "")))
    return annotation
