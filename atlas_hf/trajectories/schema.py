"""The columns between the stages, in one place.

Every stage reads and writes `datasets` rows with these columns:

- `messages` (`normalize_trajectories` writes it, every later stage reads it): the trajectory as
  OpenAI-style chat turns (`system`, `user`, `assistant`, `tool`). A *step* is one assistant turn;
  step indices are 0-based over the assistant turns only.
- `critical_steps`, `critical_categories`, `critical_reasons`, `atlas_plan` (the annotator writes
  them, the labeller reads `critical_steps`): the oracle's choice, its categories (`CATEGORIES`),
  one reason per step, and the plan the oracle wrote down first.
- `atlas_error` (the annotator): `None`, or why no valid answer could be had for this row (such
  rows train on no step and are counted in `annotation_statistics`).
- `atlas_oracle` (the annotator): the identity of the oracle that answered (model and prompt version)
  and the ratio cap it was given, as `name(key=value, ..., max_ratio=0.3)` (`OracleIdentity`;
  `oracle_column_value` writes it, `parse_oracle_column` reads it back: the dataset card shows the
  oracle and the cap, and the `random` and `non_critical` selections draw that many steps unless told
  another ratio).
"""

from __future__ import annotations

import hashlib
import json
import math
import numbers
import re
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from atlas_hf.errors import InvalidInputError, TrajectoryError

MESSAGES = "messages"
CRITICAL_STEPS = "critical_steps"
CRITICAL_CATEGORIES = "critical_categories"
CRITICAL_REASONS = "critical_reasons"
PLAN = "atlas_plan"
ERROR = "atlas_error"
ORACLE = "atlas_oracle"

ANNOTATION_COLUMNS: tuple[str, ...] = (CRITICAL_STEPS, CRITICAL_CATEGORIES, CRITICAL_REASONS, PLAN, ERROR, ORACLE)
"""The columns an annotation run writes (and replaces when a dataset is annotated again)."""


def column_features() -> Any:
    """The `datasets.Features` of the columns between the stages.

    `messages` is `List(Json())`, so each turn keeps exactly its own keys (a struct column would give
    every turn every key seen in the dataset, filled with None); the annotation columns are lists of
    int64 or strings, and strings.

    Returns:
        `datasets.Features`: Keyed by `MESSAGES` and `ANNOTATION_COLUMNS`.
    """
    from datasets import Features, Json, List, Value

    return Features(
        {
            MESSAGES: List(Json()),
            CRITICAL_STEPS: List(Value("int64")),
            CRITICAL_CATEGORIES: List(Value("string")),
            CRITICAL_REASONS: List(Value("string")),
            PLAN: Value("string"),
            ERROR: Value("string"),
            ORACLE: Value("string"),
        }
    )


DEFAULT_MAX_RATIO = 0.3
"""The paper's ratio cap: an oracle marks at most 30% of a trajectory's steps."""

_SAFE = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-/:@+")
# 0.6 identities (`AnthropicOracle/model=.../prompt=...`, `baseline:random:seed=7`, `local:prompt=...`) and the
# `/max_ratio=` suffix of its `atlas_oracle` values: read by `parse_identity` only, so old datasets keep their cards
_LEGACY_FIELD = re.compile(r"(?:^|[/:])(\w+)=(.+?)(?=[/:]\w+=|$)")
_LEGACY_NAMES = {
    "AnthropicOracle": "anthropic",
    "OpenAIChatOracle": "openai",
    "baseline:random": "random",
    "baseline:all-steps": "all",
    "baseline:perplexity": "perplexity",
    "local": "local",
}
_RATIO = "max_ratio"


@dataclass(frozen=True)
class OracleIdentity:
    """Who annotated a row: the registered name of the oracle and the settings that change its answers.

    Written `name(key=value, ...)`, e.g. `anthropic(model=claude-sonnet-4-6, prompt=atlas-selector-v1,
    max_chars=2000)` or `random(seed=7)`, and a bare `name` without fields (`all`); a name or value with
    other characters than letters, digits and `_.-/:@+` is JSON-quoted. `str()` writes it and
    `parse_identity` reads it back, exactly.

    Attributes:
        name (`str`): The oracle's registered name (`atlas_hf.annotation.oracles.list_oracles()`).
        fields (`tuple[tuple[str, str], ...]`): The settings, in order, as text.
    """

    name: str
    fields: tuple[tuple[str, str], ...] = ()

    def get(self, key: str) -> str | None:
        """The value of field `key`, or None."""
        return dict(self.fields).get(key)

    def without(self, key: str) -> "OracleIdentity":
        """This identity less field `key`."""
        return OracleIdentity(self.name, tuple((k, v) for k, v in self.fields if k != key))

    def __str__(self) -> str:
        if not self.fields:  # a bare name: `all`, or a plugin's own identity string
            return _quoted(self.name)
        return f"{_quoted(self.name)}({', '.join(f'{k}={_quoted(v)}' for k, v in self.fields)})"


def _quoted(value: str) -> str:
    return value if value and all(c in _SAFE for c in value) else json.dumps(value)


def _text(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def format_identity(name: str, **fields: Any) -> str:
    """An oracle's `identity` in the one structured format (`OracleIdentity`).

    Args:
        name (`str`): The oracle's registered name.
        **fields: The settings that change its answers (model, prompt version, ...), in order.

    Returns:
        `str`: e.g. `format_identity("random", seed=7) == "random(seed=7)"`.
    """
    return str(OracleIdentity(name, tuple((key, _text(value)) for key, value in fields.items())))


def parse_identity(text: str | None) -> OracleIdentity | None:
    """Read an oracle identity, or an `atlas_oracle` value, back: the one reader of both.

    Args:
        text (`str`, *optional*): `name(key=value, ...)`, or an identity of atlas_hf 0.6 (read into the
            same structure, its `/max_ratio=` suffix as a field).

    Returns:
        `OracleIdentity | None`: None for no text.

    >>> parse_identity("random(seed=7, max_ratio=0.3)").get("max_ratio")
    '0.3'

    Text that is neither (a plugin's own identity string, a hand-edited value) is read as a bare name,
    never refused: a card still names what the column holds.
    """
    if not text:
        return None
    try:
        structured = _parse_structured(text)
    except ValueError:  # a JSON-quoted token cut short
        structured = None
    if structured is not None:
        return structured
    matches = list(_LEGACY_FIELD.finditer(text))
    head = text[: matches[0].start()] if matches else text
    return OracleIdentity(_LEGACY_NAMES.get(head, head), tuple((m.group(1), m.group(2)) for m in matches))


def _parse_structured(text: str) -> OracleIdentity | None:
    """`name(key=value, ...)` or a JSON-quoted bare name, read exactly; None for anything else."""
    name, i = _read_token(text, 0, "(")
    if i == len(text):  # a bare name: only a quoted one is this format's (a plain one is read alike either way)
        return OracleIdentity(name) if text.startswith('"') else None
    end = len(text) - 1
    if not name or text[i] != "(" or text[end] != ")":
        return None
    fields, i = [], i + 1
    while i < end:
        key, i = _read_token(text, i, "=,)")
        if not key or text[i] != "=" or any(c not in _SAFE for c in key):
            return None
        value, i = _read_token(text, i + 1, ",)")
        fields.append((key, value))
        if i < end:
            if not text.startswith(", ", i) or i + 2 >= end:
                return None
            i += 2
    return OracleIdentity(name, tuple(fields)) if fields and i == end else None


def _read_token(text: str, start: int, stops: str) -> tuple[str, int]:
    """A bare or JSON-quoted token of `text` from `start` up to one of `stops`, and where it ended."""
    if text.startswith('"', start):
        value, end = json.JSONDecoder().raw_decode(text, start)
        return str(value), end
    end = start
    while end < len(text) and text[end] not in stops:
        end += 1
    return text[start:end], end


def oracle_column_value(identity: str, max_ratio: float) -> str:
    """The `atlas_oracle` value of a row: the oracle's identity with the cap it was given.

    Args:
        identity (`str`): The oracle's `identity`.
        max_ratio (`float`): The ratio cap it was given.

    Returns:
        `str`: `name(key=value, ..., max_ratio=<cap>)`.
    """
    parsed = parse_identity(identity) or OracleIdentity("unknown")
    return str(OracleIdentity(parsed.name, (*parsed.without(_RATIO).fields, (_RATIO, _text(float(max_ratio))))))


def parse_oracle_column(value: str | None) -> tuple[str | None, float | None]:
    """`(identity, max_ratio)` from an `atlas_oracle` value; None for what it does not record.

    Args:
        value (`str`, *optional*): An `atlas_oracle` value (of this release or of 0.6).

    Returns:
        `tuple[str | None, float | None]`: The oracle's identity (in the structured format) and the cap.

    >>> parse_oracle_column("random(seed=0, max_ratio=0.3)")
    ('random(seed=0)', 0.3)
    """
    parsed = parse_identity(value)
    if parsed is None:
        return None, None
    try:
        ratio = float(parsed.get(_RATIO)) if parsed.get(_RATIO) is not None else None  # type: ignore[arg-type]
    except ValueError:
        ratio = None
    return str(parsed.without(_RATIO)), ratio


CANONICAL_ROLES: tuple[str, ...] = ("system", "user", "assistant", "tool")
_TEXT_PARTS = ("text", "input_text", "output_text")
_OPTIONAL_KEYS_DROPPED_WHEN_EMPTY = ("tool_calls",)
_NORMALIZE = "Normalize the rows with atlas_hf.normalize_trajectories first."


def _check_text(text: str, row: Any, field: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        raise TrajectoryError(
            row,
            field,
            f"text that is not valid Unicode (a lone surrogate, {text[error.start]!r}, at character {error.start}).",
            "Fix the source text, or decode it with errors='replace'.",
        ) from None


def check_encodable(rows: Sequence[Mapping[str, Any]]) -> None:
    """Every string in `rows`, however nested, can be written as UTF-8 (JSON may escape lone surrogates).

    Args:
        rows (`Sequence[Mapping]`): Rows as read from a file or a list.

    Raises:
        `TrajectoryError`: A string holds a lone surrogate; the row and the path to the field are named.
    """

    def walk(value: Any, row: int, path: str) -> None:
        if isinstance(value, str):
            _check_text(value, row, path)
        elif isinstance(value, Mapping):
            for key, item in value.items():
                walk(item, row, f"{path}.{key}")
        elif isinstance(value, (list, tuple)):
            for i, item in enumerate(value):
                walk(item, row, f"{path}[{i}]")

    for index, row in enumerate(rows):
        for column, value in row.items():
            walk(value, index, column)


def text_of_parts(parts: Sequence[Any], row: Any, field: str) -> str:
    """The text of OpenAI-style content parts (`[{"type": "text", "text": ...}]`), joined.

    Args:
        parts (`Sequence[dict]`): The turn's content parts.
        row (`int` or `str`): The row, for the error message.
        field (`str`): Where the parts are (e.g. `messages[2].content`), for the error message.

    Returns:
        `str`: The text parts' text, concatenated.

    Raises:
        `TrajectoryError`: An image, audio or other non-text part (named by its position), or a part
            that is not a dict with `type`.
    """
    texts = []
    for k, part in enumerate(parts):
        kind = part.get("type") if isinstance(part, Mapping) else None
        if kind in _TEXT_PARTS and isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif isinstance(kind, str):
            raise TrajectoryError(
                row,
                f"{field}[{k}]",
                f"a {kind!r} content part; atlas_hf trains text agents and reads only text parts.",
                "Replace the part by a text description (e.g. '[image: ...]') or drop it with dataset.map first.",
            )
        else:
            raise TrajectoryError(
                row,
                f"{field}[{k}]",
                f"expected a content part, a dict with `type` and `text`; got {part!r:.80}.",
                "Write the content as a string, or as parts like {'type': 'text', 'text': '...'}.",
            )
    return "".join(texts)


_CALLS_FIX = "Write OpenAI tool calls: [{'type': 'function', 'function': {'name': ..., 'arguments': {...}}}]."


def canonical_tool_calls(calls: Any, row: Any = None, field: str = "tool_calls") -> list[dict[str, Any]]:
    """A turn's tool calls in the convention of transformers' chat templates.

    Each call becomes `{"type": "function", "function": {"name", "arguments"}}` (its `id` kept) with
    `arguments` a mapping: OpenAI's JSON strings are parsed, an empty or null string reads as `{}`,
    and flat `{"name", "arguments"}` calls are nested under `function`.

    Args:
        calls (`list[dict]`): The turn's `tool_calls`.
        row (`int` or `str`, *optional*): The row, for the error message.
        field (`str`): Where the calls are (e.g. `messages[2].tool_calls`), for the error message.

    Returns:
        `list[dict]`: New calls; the input is not changed.

    Raises:
        `TrajectoryError`: Not a list of dicts, a call without a string `name`, or `arguments` that are
            not a JSON object (invalid JSON is named with the position of the error).
    """
    if not isinstance(calls, (list, tuple)) or not all(isinstance(c, Mapping) for c in calls):
        raise TrajectoryError(row, field, f"expected a list of tool calls (dicts); got {calls!r:.80}.", _CALLS_FIX)
    out = []
    for k, call in enumerate(calls):
        nested = isinstance(call.get("function"), Mapping)
        function = call["function"] if nested else call
        where = f"{field}[{k}]" + (".function" if nested else "")
        name = function.get("name")
        if not isinstance(name, str) or not name:
            raise TrajectoryError(
                row, f"{where}.name", f"a tool call needs a string name; got {name!r:.60}.", _CALLS_FIX
            )
        arguments = function.get("arguments")
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments) if arguments.strip() else {}
            except json.JSONDecodeError as error:
                raise TrajectoryError(
                    row,
                    f"{where}.arguments",
                    f"invalid JSON ({error.msg} at character {error.pos}): {arguments!r:.80}.",
                    "Write the arguments as a JSON object (or a dict).",
                ) from None
        if arguments is None:
            arguments = {}
        if not isinstance(arguments, Mapping):
            raise TrajectoryError(
                row,
                f"{where}.arguments",
                f"arguments must be a JSON object; got {type(arguments).__name__} {arguments!r:.60}.",
                'Wrap them in an object, e.g. {"value": ...}.',
            )
        canonical: dict[str, Any] = {"type": "function", "function": {"name": name, "arguments": dict(arguments)}}
        if call.get("id") is not None:
            canonical = {"id": call["id"], **canonical}
        out.append(canonical)
    return out


def check_messages(messages: Any, row: Any = None) -> list[dict[str, Any]]:
    """One row's canonical messages, checked: what every stage reads before it uses a trajectory.

    Content given as OpenAI content parts is read as the concatenation of its text parts; keys
    whose value is null are dropped (Arrow adds them to every turn of a struct column).

    Args:
        messages (`list[dict]`): The row's `messages`.
        row (`int` or `str`, *optional*): The row's index (or a label), for the error message.

    Returns:
        `list[dict]`: The turns, each a new dict with a string `content` (or None on an assistant turn
        that only calls tools).

    Raises:
        `TrajectoryError`: The first thing wrong, with the row, the field (e.g. `messages[3].role`)
            and how to fix it.
    """
    if not isinstance(messages, (list, tuple)):
        raise TrajectoryError(
            row,
            MESSAGES,
            f"expected a list of turns, dicts with `role` and `content`; got {type(messages).__name__}.",
            _NORMALIZE,
        )
    if not messages:
        raise TrajectoryError(row, MESSAGES, "the chat is empty.", "Drop the row, or normalize with on_error='skip'.")
    checked = []
    for t, turn in enumerate(messages):
        where = f"{MESSAGES}[{t}]"
        if not isinstance(turn, Mapping):
            raise TrajectoryError(
                row, where, f"expected a dict turn with `role` and `content`; got {type(turn).__name__}.", _NORMALIZE
            )
        message = clean_message(turn)
        role = message.get("role")
        if role not in CANONICAL_ROLES:
            raise TrajectoryError(
                row,
                f"{where}.role",
                f"role {role!r}; expected one of {list(CANONICAL_ROLES)}.",
                "Normalize with atlas_hf.normalize_trajectories(role_map={...}).",
            )
        calls = turn.get("tool_calls")
        if calls:
            calls = message["tool_calls"] = canonical_tool_calls(calls, row, f"{where}.tool_calls")
        content = message.get("content")
        if isinstance(content, (list, tuple)):
            content = message["content"] = text_of_parts(content, row, f"{where}.content")
        if content is None and not (role == "assistant" and calls):
            raise TrajectoryError(
                row,
                f"{where}.content",
                f"content is missing or null on a {role} turn; only an assistant turn with tool_calls may have none.",
                _NORMALIZE,
            )
        if content is not None and not isinstance(content, str):
            raise TrajectoryError(
                row,
                f"{where}.content",
                f"content of type {type(content).__name__}; expected a string or a list of text parts.",
                "Convert it to text first (dataset.map).",
            )
        if content:
            _check_text(content, row, f"{where}.content")
        checked.append(message)
    return checked


def check_critical_steps(value: Any, num_steps: int, row: Any = None) -> list[int]:
    """One row's `critical_steps`, checked against its number of steps.

    Args:
        value (`list[int]`): The row's `critical_steps`; None reads as no step.
        num_steps (`int`): The row's number of assistant turns.
        row (`int` or `str`, *optional*): The row's index (or a label), for the error message.

    Returns:
        `list[int]`: The steps, as plain ints.

    Raises:
        `TrajectoryError`: Not a list, an entry that is not an integer (bools, fractional numbers and
            strings are refused, not rounded; 2.0 reads as 2), a step out of range, or a step listed twice.
    """
    if value is None:
        return []
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):  # numpy arrays from Arrow
        value = value.tolist()
    fix = "Write the 0-based indices of the chosen assistant turns, e.g. [0, 2], or annotate the rows again."
    if not isinstance(value, (list, tuple)):
        raise TrajectoryError(
            row, CRITICAL_STEPS, f"expected a list of step indices; got {value!r:.60} ({type(value).__name__}).", fix
        )
    steps = []
    for step in value:
        if isinstance(step, float) and step.is_integer():  # Arrow makes [0] a float list beside a row's [0.7]
            step = int(step)
        if isinstance(step, bool) or not isinstance(step, numbers.Integral):
            raise TrajectoryError(
                row, CRITICAL_STEPS, f"entry {step!r:.40} ({type(step).__name__}) is not a step index.", fix
            )
        if not 0 <= step < num_steps:
            raise TrajectoryError(
                row,
                CRITICAL_STEPS,
                f"step {step} is out of range for a trajectory of {num_steps} assistant steps (0..{num_steps - 1}).",
                fix,
            )
        steps.append(int(step))
    if len(set(steps)) != len(steps):
        raise TrajectoryError(row, CRITICAL_STEPS, f"{steps} lists a step twice.", fix)
    return steps


def clean_message(message: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of `message` without None-valued optional keys (and without an empty `tool_calls`).

    `content` is kept even when None (an assistant turn that only calls tools). Use it on turns
    read from struct-typed Arrow columns before rendering a chat template.
    """
    cleaned = {}
    for key, value in message.items():
        if key != "content" and value is None:
            continue
        if key in _OPTIONAL_KEYS_DROPPED_WHEN_EMPTY and not value:
            continue
        cleaned[key] = value
    return cleaned


def assistant_indices(messages: Sequence[Mapping[str, Any]]) -> list[int]:
    """Positions in `messages` of the assistant turns: the steps, in order."""
    return [i for i, message in enumerate(messages) if message.get("role") == "assistant"]


def num_steps(messages: Sequence[Mapping[str, Any]]) -> int:
    """The number of steps (assistant turns) of a trajectory."""
    return len(assistant_indices(messages))


def max_selected_steps(num_steps: int, ratio: float) -> int:
    """The most steps a trajectory may have selected at `ratio`.

    Args:
        num_steps (`int`): The trajectory's number of steps.
        ratio (`float`): The ratio, in (0, 1].

    Returns:
        `int`: `max(1, floor(num_steps * ratio))`, at most `num_steps`; 0 for no steps.

    Raises:
        `InvalidInputError`: `ratio` is out of (0, 1].

    >>> max_selected_steps(10, 0.3), max_selected_steps(2, 0.3), max_selected_steps(0, 0.3)
    (3, 1, 0)
    """
    if not 0.0 < ratio <= 1.0:
        raise InvalidInputError(f"ratio must be in (0, 1], got {ratio!r}.")
    if num_steps <= 0:
        return 0
    return max(1, min(num_steps, math.floor(num_steps * ratio + 1e-9)))


def row_seed(seed: int, messages: Sequence[dict[str, Any]]) -> int:
    """A per-trajectory seed: stable across processes and runs, different across trajectories.

    Args:
        seed (`int`): The run's seed.
        messages (`list[dict]`): The trajectory.

    Returns:
        `int`: A 64-bit seed from the sha256 of both.
    """
    digest = hashlib.sha256(json.dumps([seed, list(messages)], sort_keys=True, default=str).encode())
    return int.from_bytes(digest.digest()[:8], "big")
