"""`CriticalStepAnnotator`: an oracle as a `datasets.map` function, with a resumable on-disk cache.

    annotator = CriticalStepAnnotator(oracle=RandomOracle(), max_ratio=0.3, cache_dir="atlas_cache")
    ds = ds.map(annotator, batched=True)

Each row's `messages` goes to the oracle once: the answer is validated, retried once with the
validation error shown to the oracle, and written to the cache; a row that still fails is kept
with its reason in `atlas_error` (and empty steps), never dropped; `atlas_error` is "" for a row
that was annotated (a string, never null, so the column keeps one type across `map` batches).

The cache holds one small JSON file per trajectory, `cache_dir/<key[:2]>/<key>.json`, where the key
is the sha256 of the canonical trajectory (JSON with sorted keys, None fields dropped), the
oracle's `identity` (its model and prompt version) and `max_ratio`. Files are written to a
temporary name and renamed, so a killed run never leaves half an entry; an unreadable or invalid
entry is ignored and asked again. Only valid answers are cached: a row that ended in error is
asked again by the next run.

The annotator pickles to its configuration only (oracle, ratio, cache folder, options), so
`num_proc` works and `datasets` fingerprints it stably: the same `map` run twice is answered from
the `datasets` cache without calling the oracle. `stats` and `summary()` count the calls made in
this process (with `num_proc > 1` the work happens in the worker processes);
`annotation_statistics(dataset)` counts what the annotated dataset holds, however it was made.
"""

from __future__ import annotations

import inspect
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from atlas_hf.annotation.cache import AnnotationCache, cache_key, canonical_messages
from atlas_hf.errors import AnnotationError, ColumnNotFoundError, InvalidInputError, OracleError, TrajectoryError
from atlas_hf.annotation.oracles.base import Annotation, Oracle, usage_fields, validate_annotation
from atlas_hf.trajectories.schema import DEFAULT_MAX_RATIO
from atlas_hf.trajectories.schema import (
    CRITICAL_CATEGORIES,
    CRITICAL_REASONS,
    CRITICAL_STEPS,
    ERROR,
    MESSAGES,
    ORACLE,
    oracle_column_value,
    check_messages,
    num_steps,
)

if TYPE_CHECKING:
    from datasets import Dataset

logger = logging.getLogger(__name__)

_MAX_LISTED_ERRORS = 10


@dataclass
class AnnotationStats:
    """What one annotator did in this process.

    Attributes:
        rows (`int`): Rows seen.
        cached (`int`): Rows answered from the on-disk cache.
        sent (`int`): Rows sent to the oracle (retries not counted again).
        retried (`int`): Rows asked a second time after an invalid answer.
        errors (`int`): Rows left with `atlas_error` set.
    """

    rows: int = 0
    cached: int = 0
    sent: int = 0
    retried: int = 0
    errors: int = 0


def annotate_dataset(
    dataset: Dataset,
    oracle: Oracle,
    max_ratio: float = DEFAULT_MAX_RATIO,
    cache_dir: str | os.PathLike[str] | None = None,
    *,
    batch_size: int | None = 64,
    num_proc: int | None = None,
    strict: bool = False,
) -> tuple[Dataset, CriticalStepAnnotator]:
    """Mark the critical steps of every row of `dataset` (its earlier marks replaced).

    The one annotation routine of the CLI and the recipes: a `CriticalStepAnnotator` mapped over
    the dataset in batches, with the answer cache in `cache_dir` (a re-run pays only for rows not
    answered yet).

    Args:
        dataset (`datasets.Dataset`): Rows with a canonical `messages` column.
        oracle (`Oracle`): Who chooses the steps (`build_oracle(name)`, or any `Oracle`).
        max_ratio (`float`): The most steps chosen per trajectory, as a fraction of its steps.
        cache_dir (`str` or `PathLike`, *optional*): The resumable answer cache.
        batch_size (`int`, *optional*): Rows per `map` batch; `None` for the whole dataset in one
            (what Message Batches want: every request submitted before any wait).
        num_proc (`int`, *optional*): Worker processes of `map`.
        strict (`bool`): Raise `AnnotationError` on the first row that cannot be annotated.

    Returns:
        `tuple`: The annotated dataset and the annotator (its `stats` and `summary()`).

    Raises:
        `AnnotationError`: With `strict=True`, a row without a valid answer (its index and why).
        `ValueError`: `max_ratio` is not in (0, 1].
    """
    from atlas_hf.trajectories.schema import ANNOTATION_COLUMNS

    from datasets.utils.logging import disable_progress_bar, enable_progress_bar, is_progress_bar_enabled

    # One bar: the annotator's (answers, cache hits, errors, cost), not also `map`'s; worker processes
    # each have their own annotator, so with `num_proc` the bar is `map`'s.
    workers = bool(num_proc and num_proc > 1)
    annotator = CriticalStepAnnotator(
        oracle, max_ratio=max_ratio, cache_dir=cache_dir, strict=strict, progress=not workers
    )
    annotator.total = len(dataset)
    stale = [column for column in ANNOTATION_COLUMNS if column in dataset.column_names]
    bars = is_progress_bar_enabled()
    if bars and not workers:
        disable_progress_bar()
    try:
        annotated = dataset.remove_columns(stale).map(
            annotator, batched=True, batch_size=batch_size, num_proc=num_proc, with_indices=True, desc="Annotating"
        )
    finally:
        if bars:
            enable_progress_bar()
    annotator.close_progress()
    return annotated, annotator


class CriticalStepAnnotator:
    """A picklable `datasets.map(..., batched=True)` function that marks each row's critical steps.

    Args:
        oracle: any `Oracle` (`AnthropicOracle`, `LocalOracle`, `RandomOracle`, ...).
        max_ratio: the most steps that may be chosen, as a fraction of the trajectory's steps
            (an oracle with a `fixed_ratio`, as `AllStepsOracle`'s 1.0, overrides it).
        cache_dir: folder of the resumable answer cache; None keeps no cache.
        strict: raise `AnnotationError` (naming the row and the reason) instead of marking a row
            that could not be annotated.
        messages_field: the column holding the canonical chat messages.
        progress: show a progress bar (trajectories, and tokens and cost if the oracle counts them).

    Adds the columns `critical_steps`, `critical_categories`, `critical_reasons`, `atlas_plan`,
    `atlas_error` and `atlas_oracle` (the oracle's identity and the cap, `name(key=value, ..., max_ratio=0.3)`, which
    publishing reads back). Pass `with_indices=True` to `map`
    and errors name the dataset index of the row.
    """

    def __init__(
        self,
        oracle: Oracle,
        max_ratio: float = DEFAULT_MAX_RATIO,
        cache_dir: str | os.PathLike[str] | None = None,
        strict: bool = False,
        messages_field: str = MESSAGES,
        progress: bool = True,
    ) -> None:
        if not isinstance(oracle, Oracle):
            raise InvalidInputError(
                "oracle must implement atlas_hf.annotation.oracles.base.Oracle (identity, annotate), "
                f"got {type(oracle).__name__}."
            )
        if not 0.0 < max_ratio <= 1.0:
            raise InvalidInputError(f"max_ratio must be in (0, 1], got {max_ratio!r}.")
        self.oracle = oracle
        # an oracle that always chooses at one ratio (the all-steps baseline) says so
        self.max_ratio = float(getattr(oracle, "fixed_ratio", None) or max_ratio)
        self.cache_dir = None if cache_dir is None else str(Path(cache_dir).expanduser().resolve())
        self.strict = strict
        self.messages_field = messages_field
        self.progress = progress
        self._reset_runtime()

    def _reset_runtime(self) -> None:
        self.stats = AnnotationStats()
        self.errors: list[str] = []
        self._bar: Any = None
        self.total: int | None = None  # rows the progress bar counts to (`annotate_dataset` sets it)
        self._ticked = 0  # rows of the current batch already counted on the bar

    def __getstate__(self) -> dict[str, Any]:
        """Configuration only: counters and the progress bar never reach pickles or fingerprints."""
        return {
            k: getattr(self, k) for k in ("oracle", "max_ratio", "cache_dir", "strict", "messages_field", "progress")
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._reset_runtime()

    def __call__(self, batch: dict[str, list[Any]], indices: list[int] | None = None) -> dict[str, list[Any]]:
        """Annotate one batch of rows; returns the new columns."""
        if self.messages_field not in batch:
            raise ColumnNotFoundError(
                f"The rows have no {self.messages_field!r} column (columns: {sorted(batch)}). Pass "
                "messages_field= or normalize the dataset first (atlas_hf.normalize_trajectories)."
            )
        self._update_progress(0)  # the bar's clock starts before the first answers are awaited
        self._ticked = 0
        raw = batch[self.messages_field]
        if indices is not None:
            labels = [f"row {i}" for i in indices]
        else:
            hint = "map with with_indices=True for dataset indices"
            labels = [f"row {i} of this batch ({hint})" for i in range(len(raw))]
        identity = self.oracle.identity
        cache = AnnotationCache(self.cache_dir) if self.cache_dir else None
        results: list[Annotation | None] = [None] * len(raw)
        rows: list[Any] = []
        for i, messages in enumerate(raw):
            try:  # a malformed row is marked, never sent (nor allowed to stop the batch)
                check_messages(messages, indices[i] if indices is not None else f"{i} of this batch")
            except TrajectoryError as error:
                results[i] = Annotation(error=str(error))
                messages = []
            rows.append(canonical_messages(list(messages)))
        keys = [cache_key(m, identity, self.max_ratio) for m in rows]
        pending = []
        for i, messages in enumerate(rows):
            steps = num_steps(messages)
            if results[i] is not None:
                continue
            if steps == 0:
                results[i] = Annotation(
                    error=f"{labels[i]} has no assistant turn in {self.messages_field!r}, so no step to "
                    "choose; fix or filter the row."
                )
            elif cache and (hit := self._cached(cache, keys[i], messages, steps)) is not None:
                results[i] = hit
                self.stats.cached += 1
            else:
                pending.append(i)
        self._ask(rows, pending, results, keys, cache, identity)
        failed = []
        for i, annotation in enumerate(results):
            assert annotation is not None
            if annotation.error:
                failed.append(f"{labels[i]}: {annotation.error}")
        self.stats.rows += len(rows)
        self.stats.errors += len(failed)
        self.errors.extend(failed[: max(0, _MAX_LISTED_ERRORS - len(self.errors))])
        self._update_progress(len(rows) - self._ticked)  # cached, malformed and unanswered rows
        if failed and self.strict:
            raise AnnotationError(
                f"{len(failed)} row(s) could not be annotated by {identity}: "
                + "; ".join(failed[:3])
                + ". Pass strict=False to keep such rows marked in `atlas_error` instead."
            )
        return self._columns([a for a in results if a is not None], oracle_column_value(identity, self.max_ratio))

    @staticmethod
    def _columns(results: list[Annotation], oracle_column: str) -> dict[str, Any]:
        """The output columns, typed so that `datasets` never infers a null type from one batch.

        `datasets` fixes a column's type from the first batch it writes: an all-None `atlas_error` or
        an all-empty list column there would break every later batch. So `atlas_error` is "" for a
        row without error, and a list column that is empty in every row of the batch is given as a
        typed (rows, 0) array.
        """
        columns: dict[str, Any] = {}
        for annotation in results:
            for name, value in annotation.to_columns().items():
                columns.setdefault(name, []).append(value)
        columns[ERROR] = [e or "" for e in columns[ERROR]]
        typed = ((CRITICAL_STEPS, np.int64), (CRITICAL_CATEGORIES, str), (CRITICAL_REASONS, str))
        for name, dtype in typed:
            if not any(columns[name]):
                columns[name] = np.zeros((len(results), 0), dtype=dtype)
        columns[ORACLE] = [oracle_column] * len(results)
        return columns

    def _cached(
        self, cache: AnnotationCache, key: str, messages: list[dict[str, Any]], steps: int
    ) -> Annotation | None:
        """The cached answer for a row, under the oracle's identity or its 0.6 one (`legacy_identity`), so an
        upgrade does not pay again for answers already bought."""
        hit = cache.get(key, steps, self.max_ratio)
        legacy = getattr(self.oracle, "legacy_identity", None)
        if hit is None and legacy:
            hit = cache.get(cache_key(messages, legacy, self.max_ratio), steps, self.max_ratio)
            if hit is not None:
                cache.put(key, hit, self.oracle.identity)
        return hit

    def _ask(
        self,
        rows: list[Any],
        pending: list[int],
        results: list[Annotation | None],
        keys: list[str],
        cache: AnnotationCache | None,
        identity: str,
    ) -> None:
        """Ask the oracle for the `pending` rows; each valid answer is cached the moment it arrives.

        An oracle whose `annotate` takes `on_answer` hands over each answer as it comes, so a run
        killed half-way loses only the requests in flight. A well-formed answer that fails validation
        is asked once more, with the error shown to the oracle; a failed request (an answer with
        `error`) is not asked again here: the SDK has already retried what can be retried.
        """
        streams = "on_answer" in inspect.signature(self.oracle.annotate).parameters
        lock = threading.Lock()
        feedback: list[str] | None = None
        for attempt in range(2):
            if not pending:
                return
            delivered: set[int] = set()
            to_retry: dict[int, str] = {}

            def record(j: int, answer: Annotation, asked: list[int] = pending, attempt: int = attempt) -> None:
                with lock:
                    if j in delivered:
                        return
                    delivered.add(j)
                    if attempt:  # counted as answers arrive, so the bar's postfix moves with the bar
                        self.stats.retried += 1
                    else:
                        self.stats.sent += 1
                i = asked[j]
                error = validate_annotation(answer, num_steps(rows[i]), self.max_ratio)
                if error is None:
                    if cache:
                        cache.put(keys[i], answer, identity)
                    results[i] = answer
                elif answer.error:
                    results[i] = answer
                else:
                    results[i] = Annotation(error=f"invalid answer after a retry: {error}" if attempt else error)
                    if not attempt:
                        with lock:
                            to_retry[j] = error
                        return
                with lock:  # this row is done: the bar moves with each answer, not with each batch
                    self._update_progress(1)
                    self._ticked += 1

            answers = self.oracle.annotate(
                [rows[i] for i in pending],
                self.max_ratio,
                feedback=feedback if attempt else None,
                **({"on_answer": record} if streams else {}),
            )
            if len(answers) != len(pending):
                raise OracleError(
                    f"Oracle {identity} returned {len(answers)} annotations for {len(pending)} trajectories; "
                    "an oracle must answer each trajectory once, in order."
                )
            for j, answer in enumerate(answers):
                record(j, answer)  # answers already handed over through on_answer are skipped
            retry = sorted(to_retry)
            feedback = [to_retry[j] for j in retry]
            pending = [pending[j] for j in retry]

    def _update_progress(self, n: int) -> None:
        if not self.progress:
            return
        if self._bar is None:
            from tqdm.auto import tqdm

            self._bar = tqdm(desc="Annotating critical steps", unit="traj", total=self.total, dynamic_ncols=True)
        postfix = {"cached": self.stats.cached, "sent": self.stats.sent, "errors": self.stats.errors}
        postfix.update(usage_fields(self.oracle))
        self._bar.set_postfix(postfix, refresh=False)
        self._bar.update(n)

    def close_progress(self) -> None:
        """Close the progress bar (a `map` ends without telling its function)."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def summary(self) -> str:
        """A few lines: rows, cache hits, sent, retried, errors (the first few named), tokens and cost."""
        s = self.stats
        lines = [
            f"Annotated {s.rows} trajectories with {self.oracle.identity} (max_ratio={self.max_ratio}): "
            f"{s.cached} from the cache, {s.sent} sent to the oracle, {s.retried} retried, {s.errors} errors."
        ]
        usage = usage_fields(self.oracle)
        if usage:
            lines.append("Usage: " + ", ".join(f"{k} {v}" for k, v in usage.items()))
        lines += [f"  error: {e}" for e in self.errors]
        if s.errors > len(self.errors):
            lines.append(f"  ... and {s.errors - len(self.errors)} more (see the atlas_error column).")
        return "\n".join(lines)
