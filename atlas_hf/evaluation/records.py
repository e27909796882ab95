"""The episodes file of an evaluation: one JSON line per finished episode, read back to resume.

`evaluate_agent` appends each episode as it ends (flushed), so a killed run loses only the
episodes in flight; a re-run reads the file, plays only the (environment, seed) pairs missing
from it, and rewrites it sorted, atomically.
"""

from __future__ import annotations

import json
import numbers
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

from atlas_hf.errors import InvalidInputError


def episodes_to_play(
    names: Sequence[str],
    episodes: int | Mapping[str, int],
    seed: int,
    max_turns: int,
    records_path: str | Path | None,
) -> tuple[list[tuple[str, int]], list[dict[str, Any]], dict[tuple[str, int], dict[str, Any]]]:
    """What an evaluation asks for, and what its records file already holds.

    Args:
        names (`list[str]`): The environments.
        episodes (`int` or `Mapping[str, int]`): Episodes per environment, from `seed` on: one count for
            every environment, or a count for each (every name in `names` given one).
        seed (`int`): The first environment seed.
        max_turns (`int`): The evaluation's turn limit (a file played with another is refused).
        records_path (`str` or `Path`, *optional*): The records file; None when not resuming.

    Returns:
        `tuple`: `(wanted, kept, done)`: the (env, seed) pairs asked for, in order; the records the
        file holds; and those records by (env, seed), less the episodes a failed policy request ended.

    Raises:
        `InvalidInputError`: A count or `max_turns` is not positive, a mapping leaves an environment out,
            or the file holds episodes played with another `max_turns`.
    """
    counts = episode_counts(names, episodes)
    if max_turns <= 0:
        raise InvalidInputError(f"max_turns must be positive, got {max_turns!r}.")
    wanted = [(name, seed + i) for name in names for i in range(counts[name])]
    kept = resumable_records(records_path, max_turns) if records_path is not None else []
    return wanted, kept, {(r["env"], int(r["seed"])): r for r in kept if not r.get("error")}  # failed requests: again


def episode_counts(names: Sequence[str], episodes: int | Mapping[str, int]) -> dict[str, int]:
    """How many episodes each environment plays.

    Args:
        names (`list[str]`): The environments.
        episodes (`int` or `Mapping[str, int]`): One count for all, or one per environment.

    Returns:
        `dict[str, int]`: The count of each name.

    Raises:
        `InvalidInputError`: A count that is not positive, or a mapping without one of `names` (named).
    """
    if isinstance(episodes, Mapping):
        missing = [name for name in names if name not in episodes]
        if missing:
            raise InvalidInputError(
                f"episodes gives no count for {missing}; give every environment one, or pass one int for all."
            )
        counts = {name: episodes[name] for name in names}
    else:
        counts = {name: episodes for name in names}
    for name, count in counts.items():
        if not isinstance(count, numbers.Integral) or isinstance(count, bool) or count <= 0:
            raise InvalidInputError(f"episodes must be positive, got {count!r} for {name}.")
    return counts


def read_records(path: str | Path) -> list[dict[str, Any]]:
    """The episode records of a JSONL file written by `evaluate_agent` ([] if it does not exist).

    A last line cut short (the process was killed while writing it) is dropped: that episode is
    played again on resume.

    Raises:
        `ValueError`: A line other than the last is not a JSON record.
    """
    path = Path(path)
    if not path.is_file():
        return []
    lines = path.read_text(encoding="utf-8").splitlines()
    records = []
    for number, line in enumerate(lines, 1):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if number == len(lines):
                break
            raise InvalidInputError(
                f"{path}: line {number} is not a JSON episode record; remove the file or fix the line."
            ) from None
    return records


def resumable_records(path: str | Path, max_turns: int) -> list[dict[str, Any]]:
    """The records of `path` (see `read_records`), refused if they were played with another `max_turns`.

    Args:
        path (`str` or `Path`): The records file.
        max_turns (`int`): The evaluation's turn limit.

    Returns:
        `list[dict]`: The records.

    Raises:
        `InvalidInputError`: A record was played with another `max_turns`.
    """
    records = read_records(path)
    other = sorted({r["max_turns"] for r in records if r.get("max_turns", max_turns) != max_turns})
    if other:
        raise InvalidInputError(
            f"{path} holds episodes played with max_turns={other[0]}, not {max_turns}: pass another "
            "records_path, or resume=False to play every episode again."
        )
    return records


def write_jsonl(path: Path, records: Sequence[dict[str, Any]]) -> None:
    """Replace `path` with `records` atomically (a kill leaves the old file or the new one).

    Args:
        path (`Path`): The file.
        records (`list[dict]`): One JSON line each.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    with partial.open("w", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
    os.replace(partial, path)


class RecordSink:
    """Appends each finished episode to the records file at once (flushed), after the kept ones.

    Args:
        path (`str` or `Path`): The records file (rewritten with `kept` first, which drops a line cut short).
        kept (`list[dict]`): The records to keep.
    """

    def __init__(self, path: str | Path, kept: Sequence[dict[str, Any]]) -> None:
        write_jsonl(Path(path), kept)
        self._file = Path(path).open("a", encoding="utf-8")

    def append(self, record: dict[str, Any]) -> None:
        """Write one finished episode's record, flushed."""
        self._file.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._file.flush()

    def close(self) -> None:
        """Close the file."""
        self._file.close()
