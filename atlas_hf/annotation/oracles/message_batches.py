"""Message Batches for `AnthropicOracle`: half-price requests that survive a kill without paying twice.

Every chunk's batch is submitted before the first is waited for. Before a create call, the intent
(request count and time) is written to `batch_state_dir`; after it, the batch id. A re-run resumes
a stored id, or finds the batch an interrupted create call made, so no batch is paid for twice.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import anthropic

from atlas_hf.annotation.oracles.anthropic_config import AnthropicOracleConfig
from atlas_hf.annotation.oracles.base import Annotation

logger = logging.getLogger(__name__)

CONFIG_ERRORS = (anthropic.AuthenticationError, anthropic.PermissionDeniedError, anthropic.NotFoundError)
"""Errors no retry or other row can fix (a rejected key, a forbidden or missing model): they raise."""


class MessageBatchesMixin:
    """The Message Batches path of `AnthropicOracle` (`use_batches=True`).

    Uses the oracle's `_sync()` client, `config`, `model`, `_parse_message`, `_redact`, `_describe` and
    `_config_error`.
    """

    config: AnthropicOracleConfig
    model: str

    @staticmethod
    def custom_id(params: Mapping[str, Any]) -> str:
        """A request's batch `custom_id`: a hash of everything the request sends."""
        return hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:48]

    def _state_path(self, custom_ids: Sequence[str]) -> Path:
        key = hashlib.sha256("\n".join(sorted(custom_ids)).encode()).hexdigest()[:32]
        return self.config.batch_folder / f"batch-{key}.json"

    def _write_state(self, path: Path, state: Mapping[str, Any]) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(state))
        os.replace(tmp, path)

    def _already_created(self, unique: Mapping[str, Any], since: float) -> Any:
        """A batch this chunk's intent created though its id never came back (a kill or a dropped reply
        inside the create call): created since the intent, with as many requests, and, once its results
        can be read, exactly this chunk's custom_ids. None if there is no such batch."""
        client = self._sync()
        for batch in client.messages.batches.list(limit=100):
            created = batch.created_at.timestamp()
            if created < since - 5:  # newest first: the rest are older than the intent
                break
            counts = batch.request_counts
            total = counts.processing + counts.succeeded + counts.errored + counts.canceled + counts.expired
            if total != len(unique):
                continue
            if batch.processing_status == "ended":
                try:
                    ids = {line.custom_id for line in client.messages.batches.results(batch.id)}
                except anthropic.NotFoundError:
                    continue
                if ids != set(unique):
                    continue
            return batch
        return None

    def _find_or_create_batch(self, unique: dict[str, dict[str, Any]]) -> Any:
        """The chunk's batch: resumed by stored id, found again when a create call was cut short, or created.

        The intent (request count and time) is on disk before the create call, and the create call is
        never retried blindly, so a kill or a lost reply at any moment never pays for a batch twice.
        """
        client = self._sync()
        path = self._state_path(list(unique))
        state: dict[str, Any] = {}
        if path.exists():
            try:
                state = json.loads(path.read_text())
                if state.get("batch_id"):
                    batch = client.messages.batches.retrieve(state["batch_id"])
                    logger.info("Resuming Message Batch %s from %s.", state["batch_id"], path)
                    return batch
            except (ValueError, KeyError, anthropic.NotFoundError) as err:
                logger.warning("Ignoring stored batch state %s (%s); creating a new batch.", path, type(err).__name__)
                state = {}
        if state.get("intent_at"):
            found = self._already_created(unique, float(state["intent_at"]))
            if found is not None:
                logger.info("Found Message Batch %s, created by an interrupted run; resuming it.", found.id)
                self._write_state(path, {**state, "batch_id": found.id})
                return found
        state = {"intent_at": time.time(), "model": self.model, "requests": len(unique)}
        self._write_state(path, state)
        try:
            batch = client.with_options(max_retries=0).messages.batches.create(
                requests=[{"custom_id": cid, "params": params} for cid, params in unique.items()]
            )
        except (anthropic.APIConnectionError, anthropic.InternalServerError):
            # the batch may exist even though its reply was lost: look before creating another
            batch = self._already_created(unique, float(state["intent_at"]))
            if batch is None:
                raise
        self._write_state(path, {**state, "batch_id": batch.id})
        return batch

    def _batch_chunks(self, unique: dict[str, dict[str, Any]]) -> list[dict[str, dict[str, Any]]]:
        """The requests split, in order, into batches under `max_batch_requests` and `max_batch_bytes`."""
        chunks: list[dict[str, dict[str, Any]]] = [{}]
        size = 0
        for cid, params in unique.items():
            n = len(json.dumps(params, ensure_ascii=False).encode()) + len(cid) + 32
            if chunks[-1] and (
                len(chunks[-1]) >= self.config.max_batch_requests or size + n > self.config.max_batch_bytes
            ):
                chunks.append({})
                size = 0
            chunks[-1][cid] = params
            size += n
        return chunks

    def _wait(self, batches: list[Any]) -> list[Any]:
        """Poll the batches until every one has ended, with one progress bar over all their requests."""
        from tqdm.auto import tqdm

        client = self._sync()
        counts = [b.request_counts for b in batches]
        total = sum(c.processing + c.succeeded + c.errored + c.canceled + c.expired for c in counts)
        desc = f"Message Batch {batches[0].id}" if len(batches) == 1 else f"{len(batches)} Message Batches"
        with tqdm(total=total, desc=desc, unit="req") as bar:
            while True:
                bar.n = total - sum(b.request_counts.processing for b in batches)
                bar.refresh()
                if all(b.processing_status == "ended" for b in batches):
                    return batches
                time.sleep(self.config.batch_poll_interval)
                batches = [
                    b if b.processing_status == "ended" else client.messages.batches.retrieve(b.id) for b in batches
                ]

    def _batch_answers(self, chunk: dict[str, dict[str, Any]], batch: Any) -> dict[str, Annotation]:
        """Each request's answer from an ended batch, matched by `custom_id`."""
        try:
            results = {line.custom_id: line.result for line in self._sync().messages.batches.results(batch.id)}
        except anthropic.NotFoundError:  # results expired (29 days): forget the batch, a re-run submits anew
            self._state_path(list(chunk)).unlink(missing_ok=True)
            gone = f"the results of Message Batch {batch.id} are no longer available; run again to submit a new batch."
            return {cid: Annotation(error=gone) for cid in chunk}
        answers: dict[str, Annotation] = {}
        for cid in chunk:
            result = results.get(cid)
            if result is None:
                answers[cid] = Annotation(error=f"batch {batch.id} returned no result for request {cid}.")
            elif result.type == "succeeded":
                answers[cid] = self._parse_message(result.message, batch=True)
            elif result.type == "errored":
                error = result.error.error
                answers[cid] = Annotation(error=self._redact(f"batch request errored ({error.type}): {error.message}"))
            else:
                answers[cid] = Annotation(error=f"batch request {result.type} before it was processed.")
        if any(a.error for a in answers.values()):  # forget the batch, so a re-run asks its failed rows anew
            self._state_path(list(chunk)).unlink(missing_ok=True)
        return answers

    def _annotate_batch(self, requests: list[dict[str, Any]]) -> list[Annotation]:
        ids = [self.custom_id(p) for p in requests]
        chunks = self._batch_chunks(dict(zip(ids, requests)))
        answers: dict[str, Annotation] = {}
        try:
            batches = self._wait([self._find_or_create_batch(chunk) for chunk in chunks])  # all submitted first
            for chunk, batch in zip(chunks, batches):
                answers.update(self._batch_answers(chunk, batch))
        except CONFIG_ERRORS as err:
            raise self._config_error(err) from None
        except anthropic.APIError as err:
            message = (
                f"{self._describe(err)}; the batch state is kept in {self.config.batch_folder}, run again to resume."
            )
            return [answers.get(cid) or Annotation(error=message) for cid in ids]
        return [answers[cid] for cid in ids]
