"""AnthropicOracle: Claude chooses the critical steps, through the official `anthropic` SDK.

One request per trajectory, with the answer forced through a tool call. The static prefix (the
answer tool and the system prompt) carries `cache_control`, so it is billed once per cache window
rather than once per trajectory. Within one `annotate` call, requests run concurrently on the
`AsyncAnthropic` client under a semaphore of `max_concurrency`; with `use_batches=True` they go
out as Message Batches (half price): every batch is submitted before the first is waited for,
and their ids are stored so an interrupted run resumes them instead of paying again.

Retries: the SDK's own retry loop (`max_retries`) retries 408/409/429/5xx (529 overloaded
included), timeouts and dropped connections, with exponential backoff that honours the
`retry-after` / `retry-after-ms` headers up to `MAX_RETRY_AFTER` seconds (60; a longer wait asked
by the server is cut to it, so one row never stalls a run for hours). A request that still fails becomes
`Annotation(error=...)` for its trajectory; only configuration errors (a rejected key, a missing
model) raise, since no row could succeed. The API key never appears in `repr`, logs or errors.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Awaitable, Callable, Mapping, Sequence, TypeVar

import anthropic

MAX_RETRY_AFTER = 60.0
"""The longest `retry-after` the clients wait before retrying; longer asks are cut to it."""


class _CappedRetryAfter:
    """Mixin for the SDK clients: the SDK's own retry schedule, with server-asked waits capped."""

    def _calculate_retry_timeout(self, remaining_retries: int, options: Any, response_headers: Any = None) -> float:
        wait = super()._calculate_retry_timeout(remaining_retries, options, response_headers)  # type: ignore[misc]
        return min(wait, MAX_RETRY_AFTER)


class _Anthropic(_CappedRetryAfter, anthropic.Anthropic):
    pass


class _AsyncAnthropic(_CappedRetryAfter, anthropic.AsyncAnthropic):
    pass

from atlas_hf.oracles.base import Annotation
from atlas_hf.oracles.prompt import (
    ANSWER_TOOL,
    DEFAULT_MAX_CHARS_PER_OBSERVATION,
    PROMPT_VERSION,
    SYSTEM_PROMPT,
    TOOL_NAME,
    build_user_message,
    parse_tool_input,
)

logger = logging.getLogger(__name__)
T = TypeVar("T")

DEFAULT_MODEL = "claude-sonnet-4-6"
"""A current Sonnet (balanced price and judgement) known to the installed SDK, with a known price."""

CACHE_WRITE_MULTIPLIER = 1.25  # 5-minute cache writes cost 1.25x the input price
CACHE_READ_MULTIPLIER = 0.1  # cache reads cost 0.1x the input price
BATCH_DISCOUNT = 0.5  # Message Batches cost half of every token price
CACHE_WINDOW_S = 240.0  # treat the 5-minute cache as warm this long after the last success


@dataclass(frozen=True)
class ModelPrice:
    """List prices of one model, in USD per million tokens."""

    input_per_mtok: float
    output_per_mtok: float


PRICES: dict[str, ModelPrice] = {
    "claude-sonnet-4-6": ModelPrice(3.0, 15.0),
    "claude-sonnet-4-5": ModelPrice(3.0, 15.0),
    "claude-haiku-4-5": ModelPrice(1.0, 5.0),
    "claude-opus-4-6": ModelPrice(5.0, 25.0),
    "claude-opus-4-5": ModelPrice(5.0, 25.0),
}
"""Known list prices. Dated ids (`claude-haiku-4-5-20251001`) use their alias's price; other
models need `price=` (the oracle refuses to guess)."""


def price_for(model: str) -> ModelPrice | None:
    """The list price of `model` from `PRICES` (a dated id falls back to its alias), or None."""
    if model in PRICES:
        return PRICES[model]
    stem, _, suffix = model.rpartition("-")
    return PRICES.get(stem) if suffix.isdigit() and len(suffix) == 8 else None


@dataclass
class OracleUsage:
    """Tokens and requests an oracle has used so far, and what they cost at list price."""

    price: ModelPrice
    input_tokens: int = 0
    output_tokens: int = 0
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0
    requests: int = 0
    batch_requests: int = 0
    failed_requests: int = 0
    _cost_usd: float = field(default=0.0, repr=False)

    def add(self, usage: Any, batch: bool = False) -> None:
        """Count one answered request's `usage` (an `anthropic.types.Usage`)."""
        inp = usage.input_tokens or 0
        out = usage.output_tokens or 0
        write = getattr(usage, "cache_creation_input_tokens", None) or 0
        read = getattr(usage, "cache_read_input_tokens", None) or 0
        self.input_tokens += inp
        self.output_tokens += out
        self.cache_creation_input_tokens += write
        self.cache_read_input_tokens += read
        self.requests += 1
        self.batch_requests += int(batch)
        self._cost_usd += request_cost_usd(self.price, inp, out, write, read, batch)

    def estimated_cost_usd(self) -> float:
        """The list price of the counted usage (batch requests at half price)."""
        return self._cost_usd

    def as_dict(self) -> dict[str, Any]:
        """The counts and the estimated cost, for logs and summaries."""
        return {
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cache_creation_input_tokens": self.cache_creation_input_tokens,
            "cache_read_input_tokens": self.cache_read_input_tokens,
            "requests": self.requests,
            "batch_requests": self.batch_requests,
            "failed_requests": self.failed_requests,
            "estimated_cost_usd": round(self._cost_usd, 6),
        }


def request_cost_usd(
    price: ModelPrice, input_tokens: int, output_tokens: int, cache_write: int = 0, cache_read: int = 0,
    batch: bool = False,
) -> float:
    """The list price of one request's tokens, in USD."""
    units = (
        input_tokens * price.input_per_mtok
        + cache_write * price.input_per_mtok * CACHE_WRITE_MULTIPLIER
        + cache_read * price.input_per_mtok * CACHE_READ_MULTIPLIER
        + output_tokens * price.output_per_mtok
    )
    return units / 1e6 * (BATCH_DISCOUNT if batch else 1.0)


@dataclass
class CostEstimate:
    """A dry run's estimate for annotating some trajectories (no tokens generated)."""

    trajectories: int
    input_tokens: int
    prefix_tokens: int
    assumed_output_tokens: int
    cost_usd: float
    cost_usd_without_caching: float
    cost_usd_batches: float

    def __str__(self) -> str:
        return (
            f"{self.trajectories} trajectories: {self.input_tokens:,} input tokens "
            f"({self.prefix_tokens:,} of them the cacheable prefix per request), "
            f"~{self.assumed_output_tokens:,} output tokens assumed; estimated ${self.cost_usd:.2f} "
            f"(${self.cost_usd_without_caching:.2f} without prompt caching, "
            f"${self.cost_usd_batches:.2f} with Message Batches)"
        )


_CONFIG_ERRORS = (anthropic.AuthenticationError, anthropic.PermissionDeniedError, anthropic.NotFoundError)


class AnthropicOracle:
    """Claude as the ATLaS selector (implements `atlas_hf.oracles.base.Oracle`).

    Args:
        model: the Claude model; `DEFAULT_MODEL` by default.
        api_key: the key; `ANTHROPIC_API_KEY` when None. Never shown in `repr` or errors.
        base_url: the API's address (a proxy, a stand-in); the SDK's default when None.
        max_concurrency: requests in flight at once within one `annotate` call.
        max_retries: the SDK's retries per request (429, 529, 5xx, timeouts, dropped connections).
        timeout: seconds before one attempt times out (then it is retried).
        use_batches: send each `annotate` call as Message Batches (half price, slower; map with a
            large `batch_size`, or `batch_size=None` for the whole dataset at once, so every
            request is submitted before any is awaited).
        batch_state_dir: where batch ids are stored so an interrupted run resumes its batches;
            `~/.cache/atlas_hf/anthropic_batches` when None.
        max_batch_requests, max_batch_bytes: the most requests, and the most bytes of request
            JSON, in one Message Batch (the API allows 100,000 requests and 256 MB); more go out
            as several batches.
        max_tokens: the answer's token budget.
        max_chars_per_observation: observations longer than this are clipped in the middle.
        batch_poll_interval: seconds between polls of a running batch.
        price: the model's list price, required for a model not in `PRICES`.
        warm_cache: when the prompt cache is cold, send one request alone first so the others
            read the cached prefix instead of all writing it at once.
        assumed_output_tokens: output tokens per trajectory assumed by `estimate_cost`.
    """

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        api_key: str | None = None,
        base_url: str | None = None,
        max_concurrency: int = 16,
        max_retries: int = 8,
        timeout: float = 120.0,
        use_batches: bool = False,
        batch_state_dir: str | os.PathLike[str] | None = None,
        max_tokens: int = 2048,
        max_chars_per_observation: int = DEFAULT_MAX_CHARS_PER_OBSERVATION,
        batch_poll_interval: float = 30.0,
        price: ModelPrice | None = None,
        warm_cache: bool = True,
        assumed_output_tokens: int = 400,
        max_batch_requests: int = 100_000,
        max_batch_bytes: int = 200_000_000,
    ) -> None:
        if max_concurrency < 1:
            raise ValueError(f"max_concurrency must be at least 1, got {max_concurrency}.")
        if not 1 <= max_batch_requests <= 100_000 or max_batch_bytes < 1:
            raise ValueError(
                f"max_batch_requests must be in [1, 100000] and max_batch_bytes positive, got "
                f"{max_batch_requests} and {max_batch_bytes}."
            )
        resolved = price or price_for(model)
        if resolved is None:
            raise ValueError(
                f"no list price is known for model {model!r}: pass price=ModelPrice(input_per_mtok=..., "
                f"output_per_mtok=...) (known: {sorted(PRICES)})."
            )
        self.model = model
        self._api_key = api_key
        self.base_url = base_url
        self.max_concurrency = max_concurrency
        self.max_retries = max_retries
        self.timeout = timeout
        self.use_batches = use_batches
        self.batch_state_dir = Path(batch_state_dir or Path.home() / ".cache" / "atlas_hf" / "anthropic_batches")
        self.max_tokens = max_tokens
        self.max_chars_per_observation = max_chars_per_observation
        self.batch_poll_interval = batch_poll_interval
        self.price = resolved
        self.warm_cache = warm_cache
        self.assumed_output_tokens = assumed_output_tokens
        self.max_batch_requests = max_batch_requests
        self.max_batch_bytes = max_batch_bytes
        self._init_runtime()

    prompt_version = PROMPT_VERSION
    """Version of the selector prompt (stored in `identity`, so it keys the cache)."""

    _CONFIG_FIELDS = (
        "model", "_api_key", "base_url", "max_concurrency", "max_retries", "timeout", "use_batches",
        "batch_state_dir", "max_tokens", "max_chars_per_observation", "batch_poll_interval", "price",
        "warm_cache", "assumed_output_tokens", "max_batch_requests", "max_batch_bytes",
    )

    def _init_runtime(self) -> None:
        self.usage = OracleUsage(self.price)
        self._sync_client: anthropic.Anthropic | None = None
        self._async_client: anthropic.AsyncAnthropic | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pid = os.getpid()
        self._cache_warm_until = 0.0

    def __getstate__(self) -> dict[str, Any]:
        # Configuration only: clients, the event loop and the usage counters stay behind, so
        # the pickle is small, works across processes and fingerprints the same on every run.
        return {name: self.__dict__[name] for name in self._CONFIG_FIELDS}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._init_runtime()

    def __repr__(self) -> str:
        return (
            f"AnthropicOracle(model={self.model!r}, base_url={self.base_url!r}, "
            f"max_concurrency={self.max_concurrency}, use_batches={self.use_batches})"
        )

    @property
    def identity(self) -> str:
        """The class, model, prompt version and clipping: what decides the answers."""
        return (
            f"AnthropicOracle/model={self.model}/prompt={PROMPT_VERSION}"
            f"/max_chars={self.max_chars_per_observation}"
        )

    # ---------------------------------------------------------------- clients

    def _key(self) -> str:
        key = self._api_key or os.environ.get("ANTHROPIC_API_KEY")
        if not key:
            raise ValueError("no Anthropic API key: set ANTHROPIC_API_KEY or pass AnthropicOracle(api_key=...).")
        return key

    def _client_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"api_key": self._key(), "max_retries": self.max_retries, "timeout": self.timeout}
        if self.base_url:
            kwargs["base_url"] = self.base_url
        return kwargs

    def _check_process(self) -> None:
        if self._pid != os.getpid():  # forked: the parent's clients and loop are not ours
            self._init_runtime()

    def _sync(self) -> anthropic.Anthropic:
        self._check_process()
        if self._sync_client is None:
            self._sync_client = _Anthropic(**self._client_kwargs())
        return self._sync_client

    def _run(self, make: Callable[[], Awaitable[T]]) -> T:
        """Run a coroutine on this oracle's own event loop thread (works under a running loop too)."""
        self._check_process()
        if self._loop is None or self._loop.is_closed():
            loop = asyncio.new_event_loop()
            threading.Thread(target=loop.run_forever, name="atlas-anthropic-loop", daemon=True).start()
            self._loop = loop
            self._async_client = None

        async def with_client() -> T:
            if self._async_client is None:
                self._async_client = _AsyncAnthropic(**self._client_kwargs())
            return await make()

        return asyncio.run_coroutine_threadsafe(with_client(), self._loop).result()

    def close(self) -> None:
        """Close the HTTP clients and stop the event loop thread (they are rebuilt on next use)."""
        if self._loop is not None and not self._loop.is_closed():
            if self._async_client is not None:
                asyncio.run_coroutine_threadsafe(self._async_client.close(), self._loop).result()
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._sync_client is not None:
            self._sync_client.close()
        self._sync_client, self._async_client, self._loop = None, None, None

    # ---------------------------------------------------------------- requests

    def request_params(
        self, messages: Sequence[Mapping[str, Any]], max_ratio: float, feedback: str | None = None
    ) -> dict[str, Any]:
        """The Messages API parameters of one trajectory's request."""
        return {
            "model": self.model,
            "max_tokens": self.max_tokens,
            "system": [{"type": "text", "text": SYSTEM_PROMPT, "cache_control": {"type": "ephemeral"}}],
            "tools": [ANSWER_TOOL],
            "tool_choice": {"type": "tool", "name": TOOL_NAME},
            "messages": [
                {
                    "role": "user",
                    "content": build_user_message(messages, max_ratio, feedback, self.max_chars_per_observation),
                }
            ],
        }

    def _redact(self, text: str) -> str:
        key = self._api_key or os.environ.get("ANTHROPIC_API_KEY")
        return text.replace(key, "<redacted>") if key else text

    def _describe(self, err: BaseException) -> str:
        if isinstance(err, anthropic.APIStatusError):
            body = err.body if isinstance(err.body, Mapping) else {}
            detail = body.get("error", {}) if isinstance(body.get("error"), Mapping) else {}
            kind = detail.get("type", type(err).__name__)
            message = detail.get("message", str(err))
            text = f"Anthropic API error {err.status_code} ({kind}): {message}"
            if getattr(err, "request_id", None):
                text += f" [request {err.request_id}]"
        elif isinstance(err, anthropic.APITimeoutError):
            text = f"Anthropic API request timed out after {self.timeout}s"
        elif isinstance(err, anthropic.APIConnectionError):
            text = f"Anthropic API connection failed: {err}"
        else:
            text = f"{type(err).__name__}: {err}"
        retryable = isinstance(err, anthropic.APIConnectionError) or (  # timeouts are connection errors
            isinstance(err, anthropic.APIStatusError) and (err.status_code in (408, 409, 429) or err.status_code >= 500)
        )
        if retryable:
            text += f" (after {self.max_retries} retries; request not answered)"
        return self._redact(text)

    def _config_error(self, err: BaseException) -> RuntimeError:
        return RuntimeError(
            f"{self._describe(err)}. This is a configuration problem (key, permissions or model "
            f"{self.model!r}), so no trajectory can succeed: fix it and run again."
        )

    def _parse_message(self, message: Any, batch: bool = False) -> Annotation:
        """The answer in a reply, taken only from a `tool_use` stop; anything else is the row's error."""
        request = getattr(message, "_request_id", None) or getattr(message, "id", None)
        where = f" (request {request})" if request else ""
        try:
            if message.usage is None:
                raise ValueError("the reply has no usage")
            self.usage.add(message.usage, batch=batch)
            blocks = [b for b in message.content if getattr(b, "type", None) == "tool_use" and b.name == TOOL_NAME]
        except (AttributeError, TypeError, ValueError) as err:
            self.usage.failed_requests += 1
            return Annotation(error=f"malformed reply from the Anthropic API{where}: {err}.")
        if message.stop_reason == "max_tokens":
            return Annotation(error=f"the answer was cut off at max_tokens={self.max_tokens}{where}: raise max_tokens.")
        if message.stop_reason != "tool_use" or not blocks:
            return Annotation(
                error=f"the model did not answer with {TOOL_NAME} (stop_reason={message.stop_reason}){where}."
            )
        return parse_tool_input(blocks[0].input)

    async def _annotate_one(self, params: dict[str, Any], semaphore: asyncio.Semaphore) -> Annotation:
        assert self._async_client is not None
        try:
            async with semaphore:
                message = await self._async_client.messages.create(**params)
        except _CONFIG_ERRORS as err:
            raise self._config_error(err) from None
        except anthropic.APIResponseValidationError as err:
            self.usage.failed_requests += 1
            return Annotation(error=self._redact(f"malformed reply from the Anthropic API: {err}"))
        except anthropic.APIError as err:
            self.usage.failed_requests += 1
            return Annotation(error=self._describe(err))
        except (ValueError, TypeError, KeyError, AttributeError) as err:  # a body the SDK could not read
            self.usage.failed_requests += 1
            return Annotation(error=self._redact(f"malformed reply from the Anthropic API: {type(err).__name__}: {err}"))
        self._cache_warm_until = time.monotonic() + CACHE_WINDOW_S
        return self._parse_message(message)

    async def _annotate_all(
        self, requests: list[dict[str, Any]], on_answer: Callable[[int, Annotation], None] | None = None
    ) -> list[Annotation]:
        semaphore = asyncio.Semaphore(self.max_concurrency)

        async def one(index: int, params: dict[str, Any]) -> Annotation:
            answer = await self._annotate_one(params, semaphore)
            if on_answer is not None:
                on_answer(index, answer)  # before any other answer is awaited
            return answer

        results: list[Annotation] = []
        rest = list(enumerate(requests))
        if self.warm_cache and len(requests) > 1 and time.monotonic() > self._cache_warm_until:
            results.append(await one(*rest[0]))
            rest = rest[1:]
        tasks = [asyncio.ensure_future(one(i, p)) for i, p in rest]
        try:
            results += await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
        return results

    def annotate(
        self,
        trajectories: Sequence[list[dict[str, Any]]],
        max_ratio: float,
        feedback: Sequence[str | None] | None = None,
        on_answer: Callable[[int, Annotation], None] | None = None,
    ) -> list[Annotation]:
        """Annotate canonical `messages` lists, one request each, concurrently (or as one batch).

        `on_answer(i, annotation)` is called as each answer arrives, before the next is awaited
        (Message Batches: as each result is read), so a caller can store it durably.
        """
        if not trajectories:
            return []
        feedback = list(feedback) if feedback is not None else [None] * len(trajectories)
        if len(feedback) != len(trajectories):
            raise ValueError(f"feedback has {len(feedback)} entries for {len(trajectories)} trajectories.")
        requests = [self.request_params(t, max_ratio, f) for t, f in zip(trajectories, feedback)]
        if self.use_batches:
            answers = self._annotate_batch(requests)
            for i, answer in enumerate(answers):
                if on_answer is not None:
                    on_answer(i, answer)
            return answers
        return self._run(lambda: self._annotate_all(requests, on_answer))

    # ---------------------------------------------------------------- message batches

    @staticmethod
    def custom_id(params: Mapping[str, Any]) -> str:
        """A request's batch `custom_id`: a hash of everything the request sends."""
        return hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:48]

    def _state_path(self, custom_ids: Sequence[str]) -> Path:
        key = hashlib.sha256("\n".join(sorted(custom_ids)).encode()).hexdigest()[:32]
        return self.batch_state_dir / f"batch-{key}.json"

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
            if chunks[-1] and (len(chunks[-1]) >= self.max_batch_requests or size + n > self.max_batch_bytes):
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
                time.sleep(self.batch_poll_interval)
                batches = [b if b.processing_status == "ended" else client.messages.batches.retrieve(b.id)
                           for b in batches]

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
        except _CONFIG_ERRORS as err:
            raise self._config_error(err) from None
        except anthropic.APIError as err:
            message = f"{self._describe(err)}; the batch state is kept in {self.batch_state_dir}, run again to resume."
            return [answers.get(cid) or Annotation(error=message) for cid in ids]
        return [answers[cid] for cid in ids]

    # ---------------------------------------------------------------- dry run

    def estimate_cost(self, trajectories: Sequence[list[dict[str, Any]]], max_ratio: float) -> CostEstimate:
        """Estimate what annotating `trajectories` costs, with count_tokens only (nothing generated)."""

        async def count(params: dict[str, Any], semaphore: asyncio.Semaphore) -> int:
            assert self._async_client is not None
            fields = {k: v for k, v in params.items() if k != "max_tokens"}
            async with semaphore:
                return (await self._async_client.messages.count_tokens(**fields)).input_tokens

        async def count_all() -> list[int]:
            semaphore = asyncio.Semaphore(self.max_concurrency)
            prefix_probe = self.request_params([], max_ratio)
            prefix_probe["messages"] = [{"role": "user", "content": "."}]
            return await asyncio.gather(
                count(prefix_probe, semaphore),
                *(count(self.request_params(t, max_ratio), semaphore) for t in trajectories),
            )

        try:
            prefix, *counts = self._run(count_all)
        except anthropic.APIError as err:
            raise RuntimeError(f"the dry run could not count tokens: {self._describe(err)}") from None
        n, total = len(counts), sum(counts)
        output = n * self.assumed_output_tokens
        uncached = request_cost_usd(self.price, total, output)
        cached = uncached
        if n:
            cached = request_cost_usd(
                self.price, total - n * prefix, output, cache_write=prefix, cache_read=(n - 1) * prefix
            )
        return CostEstimate(
            trajectories=n,
            input_tokens=total,
            prefix_tokens=prefix,
            assumed_output_tokens=output,
            cost_usd=cached,
            cost_usd_without_caching=uncached,
            cost_usd_batches=request_cost_usd(self.price, total, output, batch=True),
        )
