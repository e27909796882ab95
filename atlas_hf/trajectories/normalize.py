"""Read agent trajectories in the schemas people publish into canonical chat `messages`.

Canonical form (`atlas_hf.trajectories.schema`): a `messages` list of OpenAI-style turns with roles `system`, `user`,
`assistant` and `tool`; assistant `tool_calls` and tool `tool_call_id` / `name` are kept as they
are; `content` is a string, or None only on an assistant turn that carries `tool_calls`. A *step*
is one assistant turn, and step indices are 0-based over the assistant turns.

The output `messages` column is typed `List(Json())`: every turn keeps exactly its own keys.
(A struct-typed column would give every turn every key seen in the dataset, e.g. `tool_calls:
None` on user turns.) Columns typed as structs that come from elsewhere may still carry such
None keys; `clean_message` drops them, and `normalize_trajectories` applies it to every turn.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Literal, Mapping, Sequence

import datasets
from datasets import Dataset, Features, Json, List, Value

from atlas_hf.trajectories.chat_reader import DEFAULT_ROLE_MAP, ChatReader
from atlas_hf.errors import InvalidInputError, TrajectoryError
from atlas_hf.trajectories.schema import (
    CANONICAL_ROLES,
    CRITICAL_STEPS,
    MESSAGES,
    check_critical_steps,
    check_encodable,
    column_features,
    num_steps,
)

logger = logging.getLogger(__name__)

_ERROR_COLUMN = "__atlas_trajectory_error__"
_SAMPLE_ROWS = 64

Schema = Literal["auto", "openai", "sharegpt"]
_SCHEMA_KEYS: dict[str, tuple[str, str]] = {"openai": ("role", "content"), "sharegpt": ("from", "value")}


@dataclass
class NormalizationReport:
    """What `normalize_trajectories_with_report` did: rows read, rows skipped and why.

    Attributes:
        num_rows (`int`): Rows in the input.
        skipped (`dict[int, str]`): Row index in the input -> the reason it could not be read (with
            `on_error="skip"`).
    """

    num_rows: int = 0
    skipped: dict[int, str] = field(default_factory=dict)

    @property
    def num_skipped(self) -> int:
        """Rows left out."""
        return len(self.skipped)

    def summary(self) -> str:
        """One line: how many rows were skipped and the first reasons."""
        if not self.skipped:
            return f"read all {self.num_rows} rows."
        first = "; ".join(reason for _, reason in sorted(self.skipped.items())[:3])
        return f"skipped {self.num_skipped} of {self.num_rows} rows that could not be read. First: {first}"


@dataclass(frozen=True)
class _Normalize:
    """The batched `datasets.map` function of `normalize_trajectories` (picklable, stable fingerprint)."""

    reader: ChatReader
    skip_errors: bool
    check_steps: bool = False  # the rows carry a `critical_steps` column of their own: check it

    def __call__(self, chats: list[Any], *columns: list[Any]) -> dict[str, list[Any]]:
        indices = columns[-1]
        given = columns[0] if self.check_steps else [None] * len(chats)
        out: dict[str, list[Any]] = {MESSAGES: []}
        steps: list[list[int]] = []
        errors: list[str | None] = []
        for chat, index, existing in zip(chats, indices, given):
            try:
                messages, critical = self.reader.read(chat, index)
                if self.check_steps:
                    check_critical_steps(existing, num_steps(messages), index)
                error = None
            except TrajectoryError as exc:
                if not self.skip_errors:
                    raise
                messages, critical, error = [], [], str(exc)
            out[MESSAGES].append(messages)
            steps.append(critical)
            errors.append(error)
        if self.reader.loss_field is not None:
            out[CRITICAL_STEPS] = steps
        if self.skip_errors:
            out[_ERROR_COLUMN] = errors
        return out


def _is_readable(errors: list[str | None]) -> list[bool]:
    return [error is None for error in errors]


# --------------------------------------------------------------------------- schema resolution


def _sample_turns(dataset: Dataset, column: str) -> list[Mapping[str, Any]]:
    """Turns (dicts) from the first rows of `column`, to tell its keys."""
    values = dataset.select(range(min(len(dataset), _SAMPLE_ROWS)))[column]
    return [turn for chat in values if isinstance(chat, list) for turn in chat if isinstance(turn, Mapping)]


def _is_chat_feature(feature: Any) -> bool:
    return isinstance(feature, (List, datasets.Sequence, Json)) or isinstance(feature, list)


def _resolve_messages_field(dataset: Dataset, role_field: str | None, content_field: str | None) -> str:
    columns = dataset.column_names
    for preferred in (MESSAGES, "conversations"):
        if preferred in columns:
            return preferred
    # the turn keys to look for: the ones given, the schema's own for the ones not given
    pairs = [(role_field or r, content_field or c) for r, c in _SCHEMA_KEYS.values()]
    candidates = []
    for column in columns:
        if not _is_chat_feature(dataset.features[column]):
            continue
        keys = {key for turn in _sample_turns(dataset, column) for key in turn}
        if any(r in keys and c in keys for r, c in pairs):
            candidates.append(column)
    if len(candidates) == 1:
        return candidates[0]
    what = f"several columns look like chats: {candidates}" if candidates else "no column holds chat turns"
    raise InvalidInputError(
        f"Cannot tell which column holds the trajectories: {what} (columns: {columns}). "
        "Pass messages_field=... naming it (and role_field= / content_field= if its turns use other keys)."
    )


def _resolve(
    dataset: Dataset,
    schema: str,
    messages_field: str | None,
    role_field: str | None,
    content_field: str | None,
    role_map: Mapping[str, str] | None,
    loss_field: str | None,
) -> ChatReader:
    if schema not in ("auto", *_SCHEMA_KEYS):
        raise InvalidInputError(f"schema must be 'auto', 'openai' or 'sharegpt', got {schema!r}.")
    field_name = messages_field or _resolve_messages_field(dataset, role_field, content_field)
    if field_name not in dataset.column_names:
        raise InvalidInputError(
            f"messages_field={field_name!r} is not a column of the dataset (columns: {dataset.column_names})."
        )
    turns = _sample_turns(dataset, field_name)
    keys = {key for turn in turns for key in turn if turn[key] is not None}
    if schema == "auto":
        schema = "sharegpt" if "from" in keys and "role" not in keys else "openai"
    default_role, default_content = _SCHEMA_KEYS[schema]
    if loss_field is None and "loss" in keys:
        loss_field = "loss"
    roles = dict(DEFAULT_ROLE_MAP)
    for source, target in (role_map or {}).items():
        if target not in CANONICAL_ROLES:
            raise InvalidInputError(
                f"role_map maps {source!r} to {target!r}; targets must be among {list(CANONICAL_ROLES)}."
            )
        roles[source] = target
    return ChatReader(
        messages_field=field_name,
        role_field=role_field or default_role,
        content_field=content_field or default_content,
        role_map=tuple(sorted(roles.items())),
        loss_field=loss_field,
    )


# --------------------------------------------------------------------------- public entry points


def normalize_trajectories_with_report(
    dataset: Dataset | Sequence[Mapping[str, Any]],
    schema: Schema = "auto",
    messages_field: str | None = None,
    role_field: str | None = None,
    content_field: str | None = None,
    role_map: Mapping[str, str] | None = None,
    loss_field: str | None = None,
    on_error: Literal["raise", "skip"] = "raise",
    num_proc: int | None = None,
) -> tuple[Dataset, NormalizationReport]:
    """`normalize_trajectories`, also returning a `NormalizationReport` of the rows skipped.

    Args:
        See `normalize_trajectories`.

    Returns:
        `tuple[datasets.Dataset, NormalizationReport]`: The normalized rows, and which were skipped and why.

    Raises:
        See `normalize_trajectories`.
    """
    if on_error not in ("raise", "skip"):
        raise InvalidInputError(f"on_error must be 'raise' or 'skip', got {on_error!r}.")
    if not isinstance(dataset, Dataset):
        rows = [dict(row) for row in dataset]
        try:
            dataset = Dataset.from_list(rows, on_mixed_types="use_json")
        except UnicodeEncodeError:
            check_encodable(rows)
            raise
    reader = _resolve(dataset, schema, messages_field, role_field, content_field, role_map, loss_field)
    features = Features({k: v for k, v in dataset.features.items() if k != reader.messages_field})
    features[MESSAGES] = column_features()[MESSAGES]
    if reader.loss_field is not None:
        if CRITICAL_STEPS in features:
            logger.warning("Replacing `critical_steps` with the steps flagged by `%s`.", reader.loss_field)
        features[CRITICAL_STEPS] = column_features()[CRITICAL_STEPS]
    skip = on_error == "skip"
    if skip:
        features[_ERROR_COLUMN] = Value("string")
    remove = [reader.messages_field] if reader.messages_field != MESSAGES else []
    check_steps = reader.loss_field is None and CRITICAL_STEPS in dataset.column_names
    normalized = dataset.map(
        _Normalize(reader, skip, check_steps),
        batched=True,
        with_indices=True,
        input_columns=[reader.messages_field] + ([CRITICAL_STEPS] if check_steps else []),
        remove_columns=remove,
        features=features,
        num_proc=num_proc,
        desc="Normalizing trajectories",
    )
    report = NormalizationReport(num_rows=len(dataset))
    if skip:
        errors = normalized[_ERROR_COLUMN]
        report.skipped = {i: error for i, error in enumerate(errors) if error is not None}
        if report.skipped:
            normalized = normalized.filter(
                _is_readable, batched=True, input_columns=[_ERROR_COLUMN], num_proc=num_proc
            )
            logger.warning("normalize_trajectories %s", report.summary())
        normalized = normalized.remove_columns(_ERROR_COLUMN)
    return normalized, report


def normalize_trajectories(
    dataset: Dataset | Sequence[Mapping[str, Any]],
    schema: Schema = "auto",
    messages_field: str | None = None,
    role_field: str | None = None,
    content_field: str | None = None,
    role_map: Mapping[str, str] | None = None,
    loss_field: str | None = None,
    on_error: Literal["raise", "skip"] = "raise",
    num_proc: int | None = None,
) -> Dataset:
    """Read trajectories in any supported schema into a dataset with a canonical `messages` column.

    - `schema="auto"` finds the chat column (`messages`, `conversations`, or the one column whose
      values are lists of `role`/`content` or `from`/`value` dicts, e.g. tau-bench's `traj`) and its
      keys from the first rows. `"openai"` / `"sharegpt"` fix the turn keys instead.
    - `messages_field`, `role_field`, `content_field` name the column and turn keys of a custom
      schema; `role_map` maps extra role names onto `system`/`user`/`assistant`/`tool` (it extends
      `DEFAULT_ROLE_MAP`).
    - `loss_field` names a per-turn training flag (found automatically when the turns have `loss`):
      the assistant turns flagged true become `critical_steps` (replacing any such column);
      without a flag, `critical_steps` and every other column are left as they are.
    - The source chat column is removed when it is not `messages`; other columns are untouched.
    - A row that cannot be read raises `TrajectoryError` (row index, field, expected, fix);
      `on_error="skip"` drops such rows instead and logs how many (see
      `normalize_trajectories_with_report` for the per-row reasons).

    Args:
        dataset (`datasets.Dataset` or `list[dict]`): The rows, in a published schema.
        schema (`str`, defaults to `"auto"`): `"auto"`, `"openai"` or `"sharegpt"`.
        messages_field, role_field, content_field (`str`, *optional*): The chat column and its turn keys.
        role_map (`dict[str, str]`, *optional*): Extra role names -> canonical roles.
        loss_field (`str`, *optional*): The per-turn training flag.
        on_error (`str`, defaults to `"raise"`): `"raise"` or `"skip"` a row that cannot be read.
        num_proc (`int`, *optional*): Processes for `datasets.map`.

    Returns:
        `datasets.Dataset`: The rows with `messages` (typed `List(Json())`) and their other columns.

    Raises:
        `TrajectoryError`: A row cannot be read (with `on_error="raise"`).
        `InvalidInputError`: An argument is not one of its accepted values, or no chat column is found.
    """
    normalized, _ = normalize_trajectories_with_report(
        dataset, schema, messages_field, role_field, content_field, role_map, loss_field, on_error, num_proc
    )
    return normalized
