"""Load trajectories from where users keep them: data files, `save_to_disk` folders, the Hub, the sample.

Every loader ends in `normalize_trajectories`, so what comes out has canonical `messages`; a bad file
is named with its line before `datasets` sees it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

import datasets
from datasets import Dataset

from atlas_hf.errors import AtlasFileNotFoundError, InvalidInputError
from atlas_hf.trajectories.schema import check_encodable
from atlas_hf.trajectories.normalize import normalize_trajectories

_DATA_SUFFIXES = {".json": "json", ".jsonl": "json", ".parquet": "parquet"}


def _check_json_file(path: Path) -> None:
    """A JSON or JSON-lines file that `datasets` can read, or an error naming the file and the line."""
    data = path.read_bytes()
    if not data.strip():
        raise InvalidInputError(f"{path} is empty: it holds no trajectories.")
    lines = data.split(b"\n")
    for number, raw in enumerate(lines, start=1):
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as error:
            raise InvalidInputError(
                f"{path}, line {number}: not UTF-8 text (byte {raw[error.start]:#x} at column "
                f"{error.start + 1}). Re-encode the file as UTF-8."
            ) from None
    text = data.decode("utf-8")
    try:
        document = json.loads(text)  # one JSON document: a list of rows (or one row)
        rows = document if isinstance(document, list) else [document]
    except ValueError:
        rows = []
        for number, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except ValueError as error:
                    raise InvalidInputError(
                        f"{path}, line {number}: not valid JSON ({error.msg} at column {error.colno}). "
                        "Expected one JSON list of rows, or one JSON row per line."
                    ) from None
    check_encodable([row for row in rows if isinstance(row, Mapping)])  # JSON may escape lone surrogates


def load_trajectories(
    path_or_repo: str | Path, split: str = "train", name: str | None = None, **normalize_kwargs: Any
) -> Dataset:
    """Load trajectories from a local `.json` / `.jsonl` / `.parquet` file or folder, or a Hub
    dataset id, and normalize them with `normalize_trajectories(**normalize_kwargs)`.

    A `.json` file may hold one JSON list of rows (as tau-bench's) or JSON lines.

    Args:
        path_or_repo (`str` or `Path`): A file, a folder of data files, or a Hub dataset id.
        split (`str`): The split to load.
        name (`str`, *optional*): The dataset configuration of a Hub dataset (`load_dataset(name=...)`).
        **normalize_kwargs: Passed to `normalize_trajectories` (`schema=`, `messages_field=`, ...).

    Returns:
        `datasets.Dataset`: The rows, with canonical `messages`.

    Raises:
        `FileNotFoundError`: A local path (a file name with a data suffix, or a path with a folder
            part) that does not exist, said before any Hub look-up.
        `ValueError`: A file of another type, an empty file, a line that is not UTF-8 or not JSON
            (the file and the line named).
        `TrajectoryError`: A row that cannot be read as a trajectory.
    """
    path = Path(path_or_repo).expanduser()
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix not in _DATA_SUFFIXES:
            raise InvalidInputError(f"Cannot read {path}: expected a .json, .jsonl or .parquet file.")
        if _DATA_SUFFIXES[suffix] == "json":
            _check_json_file(path)
        dataset = datasets.load_dataset(_DATA_SUFFIXES[suffix], data_files=str(path), split=split)
    elif not path.exists() and (
        path.suffix.lower() in _DATA_SUFFIXES
        or str(path_or_repo).startswith((".", "/", "~"))
        or str(path_or_repo).count("/") > 1
    ):
        raise AtlasFileNotFoundError(f"{path_or_repo}: no such file or folder (and not a Hub dataset id).")
    else:
        dataset = datasets.load_dataset(str(path_or_repo), name=name, split=split)
    return normalize_trajectories(dataset, **normalize_kwargs)


def load_rows(source: str | None = None, split: str = "train", name: str | None = None) -> Dataset:
    """Rows from wherever a user keeps them: what `--dataset` / `--input` / `--dataset_name` accept.

    Args:
        source (`str`, *optional*): Nothing or `"sample"` (the embedded sample), a folder written by
            `save_to_disk` (loaded as is, annotations included; a `DatasetDict`'s `split`), or a file,
            folder or Hub dataset id of trajectories (loaded and normalized by `load_trajectories`).
        split (`str`): The split to load.
        name (`str`, *optional*): The dataset configuration of a Hub dataset.

    Returns:
        `datasets.Dataset`: Rows with a canonical `messages` column.

    Raises:
        `FileNotFoundError`: A local path that does not exist.
        `ValueError`: A file of an unknown type, an unreadable line, or a split the source does not have.
        `TrajectoryError`: A row that cannot be read as a trajectory (its index and field named).
    """
    from atlas_hf.trajectories.sample import load_sample

    if not source or source == "sample":
        return load_sample()
    path = Path(source).expanduser()
    if path.is_dir() and ((path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists()):
        loaded = datasets.load_from_disk(str(path))
        if isinstance(loaded, datasets.DatasetDict):
            if split not in loaded:
                raise InvalidInputError(f"{source} has the splits {sorted(loaded)}, not {split!r}.")
            loaded = loaded[split]
        return loaded
    return load_trajectories(source, split=split, name=name)
