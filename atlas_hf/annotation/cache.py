"""The annotation cache: one small JSON file per valid oracle answer, written atomically.

`cache_dir/<key[:2]>/<key>.json`, where the key is the sha256 of the canonical trajectory (JSON with
sorted keys, None fields dropped), the oracle's `identity` and `max_ratio`. A file is written to a
temporary name and renamed, so a killed run never leaves half an entry; an unreadable or invalid
entry is ignored (and the row asked again).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import uuid
from pathlib import Path
from typing import Any, Sequence

from atlas_hf.errors import InvalidInputError
from atlas_hf.annotation.oracles.base import Annotation, validate_annotation

logger = logging.getLogger(__name__)

CACHE_FORMAT = 1
"""Version of the cache entry layout; part of every key."""


def canonical_messages(messages: Any) -> Any:
    """`messages` with every None-valued dict field dropped, recursively.

    `datasets` stores a list of dicts as structs, filling the keys a turn lacks with None; dropping
    them makes the same trajectory look the same whether it came from a file or a dataset.
    """
    if isinstance(messages, dict):
        return {k: canonical_messages(v) for k, v in messages.items() if v is not None}
    if isinstance(messages, (list, tuple)):
        return [canonical_messages(v) for v in messages]
    return messages


def cache_key(messages: Sequence[dict[str, Any]], oracle_identity: str, max_ratio: float) -> str:
    """The cache key of one trajectory's answer.

    Args:
        messages (`list[dict]`): The trajectory (None-valued keys are ignored, see `canonical_messages`).
        oracle_identity (`str`): The oracle's `identity`.
        max_ratio (`float`): The ratio cap the oracle is given.

    Returns:
        `str`: The sha256 hex digest of the three and the cache format.
    """
    payload = json.dumps(
        {
            "format": CACHE_FORMAT,
            "messages": canonical_messages(list(messages)),
            "oracle": oracle_identity,
            "max_ratio": max_ratio,
        },
        sort_keys=True,
        ensure_ascii=False,
        separators=(",", ":"),
        default=str,
    )
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


class AnnotationCache:
    """One JSON file per valid answer under `root`, in folders named by the key's first two characters.

    Args:
        root (`str` or `os.PathLike`): The cache folder (created on the first `put`).
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def path(self, key: str) -> Path:
        """Where the entry of `key` lives."""
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str, steps: int, max_ratio: float) -> Annotation | None:
        """The cached answer for `key`.

        Args:
            key (`str`): A `cache_key`.
            steps (`int`): The trajectory's number of steps, to validate the answer against.
            max_ratio (`float`): The ratio cap, likewise.

        Returns:
            `Annotation | None`: None when missing, unreadable or no longer valid (logged, then asked again).
        """
        path = self.path(key)
        try:
            entry = json.loads(path.read_text(encoding="utf-8"))
            if entry["key"] != key:
                raise InvalidInputError(f"it holds key {entry['key']!r}")
            a = entry["annotation"]
            annotation = Annotation(
                steps=list(a["steps"]),
                categories=list(a["categories"]),
                reasons=list(a["reasons"]),
                plan=str(a["plan"]),
            )
            error = validate_annotation(annotation, steps, max_ratio)
            if error:
                raise InvalidInputError(error)
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            logger.warning("Ignoring the corrupt cache entry %s (%s); the row is asked again.", path, exc)
            return None
        return annotation

    def put(self, key: str, annotation: Annotation, oracle_identity: str) -> None:
        """Write the entry atomically (a temporary file renamed into place).

        Args:
            key (`str`): A `cache_key`.
            annotation (`Annotation`): A valid answer.
            oracle_identity (`str`): Who answered (kept in the entry for inspection).

        Raises:
            `OSError`: The folder cannot be written.
        """
        path = self.path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        entry = {
            "key": key,
            "oracle": oracle_identity,
            "annotation": {
                "steps": annotation.steps,
                "categories": annotation.categories,
                "reasons": annotation.reasons,
                "plan": annotation.plan,
            },
        }
        tmp = path.parent / f".{key}.{os.getpid()}.{uuid.uuid4().hex}.tmp"
        try:
            tmp.write_text(json.dumps(entry, ensure_ascii=False), encoding="utf-8")
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
