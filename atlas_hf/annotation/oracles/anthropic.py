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
import logging
import os
import time
from dataclasses import fields, replace
from typing import Any, Awaitable, Callable, Mapping, Sequence, TypeVar

import anthropic

from atlas_hf.errors import InvalidInputError, OracleError
from atlas_hf._upstream import CappedRetryAfter
from atlas_hf.annotation.oracles.base import Annotation, Oracle
from atlas_hf.annotation.oracles.event_loop import ClientLoop
from atlas_hf.annotation.oracles.registry import register_oracle
from atlas_hf.trajectories.schema import format_identity
from atlas_hf.annotation.oracles.message_batches import CONFIG_ERRORS, MessageBatchesMixin
from atlas_hf.annotation.oracles.anthropic_config import DEFAULT_MODEL, AnthropicOracleConfig
from atlas_hf.annotation.oracles.pricing import CostEstimate, ModelPrice, OracleUsage, request_cost_usd
from atlas_hf.annotation.oracles.prompt import (
    ANSWER_TOOL,
    PROMPT_VERSION,
    SYSTEM_PROMPT,
    TOOL_NAME,
    build_user_message,
    parse_tool_input,
)

logger = logging.getLogger(__name__)
T = TypeVar("T")

CACHE_WINDOW_S = 240.0  # treat the 5-minute cache as warm this long after the last success


class _Anthropic(CappedRetryAfter, anthropic.Anthropic):
    """The sync SDK client, its waits on `retry-after` capped."""


class _AsyncAnthropic(CappedRetryAfter, anthropic.AsyncAnthropic):
    """The async SDK client, its waits on `retry-after` capped."""


class AnthropicOracle(MessageBatchesMixin, Oracle):
    """Claude as the ATLaS selector (implements `atlas_hf.annotation.oracles.base.Oracle`).

    Args:
        config (`AnthropicOracleConfig`, *optional*): Every setting (model, concurrency, retries,
            Message Batches, price); the defaults when None.
        api_key (`str`, *optional*): The key; `ANTHROPIC_API_KEY` when None. Never shown in `repr`,
            logs or errors, and not part of the config.
        **settings: Fields of `AnthropicOracleConfig` set on top of `config`
            (`AnthropicOracle(model="claude-haiku-4-5", use_batches=True)`).

    Raises:
        `InvalidInputError`: An unknown or invalid setting.
    """

    def __init__(
        self, config: AnthropicOracleConfig | None = None, *, api_key: str | None = None, **settings: Any
    ) -> None:
        config = config or AnthropicOracleConfig()
        if settings:
            known = {f.name for f in fields(AnthropicOracleConfig)}
            unknown = sorted(set(settings) - known)
            if unknown:
                raise InvalidInputError(
                    f"AnthropicOracle got unknown settings {unknown}; the settings are the "
                    f"fields of AnthropicOracleConfig: {sorted(known)}."
                )
            config = replace(config, **settings)
        self.config = config
        self._api_key = api_key
        self._init_runtime()

    prompt_version = PROMPT_VERSION
    """Version of the selector prompt (stored in `identity`, so it keys the cache)."""

    @property
    def model(self) -> str:
        """The Claude model (`config.model`)."""
        return self.config.model

    @property
    def price(self) -> ModelPrice:
        """The model's list price: `config.price`, else the model's from `PRICES`."""
        return self.config.list_price

    def _init_runtime(self) -> None:
        self.usage = OracleUsage(self.config.list_price)
        self._sync_client: anthropic.Anthropic | None = None
        self._requests = ClientLoop(lambda: _AsyncAnthropic(**self._client_kwargs()), "atlas-anthropic-loop")
        self._pid = os.getpid()
        self._cache_warm_until = 0.0

    def __getstate__(self) -> dict[str, Any]:
        # The config (and a key passed explicitly) only: clients, the event loop and the usage counters
        # stay behind, so the pickle is small, works across processes and fingerprints the same every run.
        return {"config": self.config, "_api_key": self._api_key}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._init_runtime()

    def __repr__(self) -> str:
        return f"AnthropicOracle({self.config!r})"

    @property
    def identity(self) -> str:
        """`anthropic(model=..., prompt=..., max_chars=...)`: the model, prompt version and clipping."""
        return format_identity(
            "anthropic", model=self.model, prompt=PROMPT_VERSION, max_chars=self.config.max_chars_per_observation
        )

    @property
    def legacy_identity(self) -> str:
        """The identity of atlas_hf 0.6: the annotation cache also reads answers stored under it (until 0.8)."""
        clipping = self.config.max_chars_per_observation
        return f"AnthropicOracle/model={self.model}/prompt={PROMPT_VERSION}/max_chars={clipping}"

    # ---------------------------------------------------------------- clients

    def _key(self) -> str:
        key = self._api_key or os.environ.get("ANTHROPIC_API_KEY")
        if not key:
            raise InvalidInputError(
                "no Anthropic API key: set ANTHROPIC_API_KEY or pass AnthropicOracle(api_key=...)."
            )
        return key

    def _client_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "api_key": self._key(),
            "max_retries": self.config.max_retries,
            "timeout": self.config.timeout,
        }
        if self.config.base_url:
            kwargs["base_url"] = self.config.base_url
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
        return self._requests.run(make)

    def close(self) -> None:
        """Close the HTTP clients and stop the event loop thread (they are rebuilt on next use)."""
        self._requests.close()
        if self._sync_client is not None:
            self._sync_client.close()
        self._sync_client = None

    # ---------------------------------------------------------------- requests

    def request_params(
        self, messages: Sequence[Mapping[str, Any]], max_ratio: float, feedback: str | None = None
    ) -> dict[str, Any]:
        """The Messages API parameters of one trajectory's request.

        Args:
            messages (`list[dict]`): The trajectory.
            max_ratio (`float`): The ratio cap the prompt states.
            feedback (`str`, *optional*): Why the previous answer was rejected, shown to the model.

        Returns:
            `dict`: Keyword arguments of `client.messages.create` (system prompt and answer tool cached).
        """
        return {
            "model": self.model,
            "max_tokens": self.config.max_tokens,
            "system": [{"type": "text", "text": SYSTEM_PROMPT, "cache_control": {"type": "ephemeral"}}],
            "tools": [ANSWER_TOOL],
            "tool_choice": {"type": "tool", "name": TOOL_NAME},
            "messages": [
                {
                    "role": "user",
                    "content": build_user_message(
                        messages, max_ratio, feedback, self.config.max_chars_per_observation
                    ),
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
            text = f"Anthropic API request timed out after {self.config.timeout}s"
        elif isinstance(err, anthropic.APIConnectionError):
            text = f"Anthropic API connection failed: {err}"
        else:
            text = f"{type(err).__name__}: {err}"
        retryable = isinstance(err, anthropic.APIConnectionError) or (  # timeouts are connection errors
            isinstance(err, anthropic.APIStatusError)
            and (err.status_code in (408, 409, 429) or err.status_code >= 500)
        )
        if retryable:
            text += f" (after {self.config.max_retries} retries; request not answered)"
        return self._redact(text)

    def _config_error(self, err: BaseException) -> OracleError:
        return OracleError(
            f"{self._describe(err)}. This is a configuration problem (key, permissions or model "
            f"{self.model!r}), so no trajectory can succeed: fix it and run again."
        )

    def _parse_message(self, message: Any, batch: bool = False) -> Annotation:
        """The answer in a reply, taken only from a `tool_use` stop; anything else is the row's error."""
        request = getattr(message, "_request_id", None) or getattr(message, "id", None)
        where = f" (request {request})" if request else ""
        try:
            if message.usage is None:
                raise InvalidInputError("the reply has no usage")
            self.usage.add(message.usage, batch=batch)
            blocks = [b for b in message.content if getattr(b, "type", None) == "tool_use" and b.name == TOOL_NAME]
        except (AttributeError, TypeError, ValueError) as err:
            self.usage.failed_requests += 1
            return Annotation(error=f"malformed reply from the Anthropic API{where}: {err}.")
        if message.stop_reason == "max_tokens":
            return Annotation(
                error=f"the answer was cut off at max_tokens={self.config.max_tokens}{where}: raise max_tokens."
            )
        if message.stop_reason != "tool_use" or not blocks:
            return Annotation(
                error=f"the model did not answer with {TOOL_NAME} (stop_reason={message.stop_reason}){where}."
            )
        return parse_tool_input(blocks[0].input)

    async def _annotate_one(self, params: dict[str, Any], semaphore: asyncio.Semaphore) -> Annotation:
        try:
            async with semaphore:
                message = await self._requests.client.messages.create(**params)
        except CONFIG_ERRORS as err:
            raise self._config_error(err) from None
        except anthropic.APIResponseValidationError as err:
            self.usage.failed_requests += 1
            return Annotation(error=self._redact(f"malformed reply from the Anthropic API: {err}"))
        except anthropic.APIError as err:
            self.usage.failed_requests += 1
            return Annotation(error=self._describe(err))
        except (ValueError, TypeError, KeyError, AttributeError) as err:  # a body the SDK could not read
            self.usage.failed_requests += 1
            return Annotation(
                error=self._redact(f"malformed reply from the Anthropic API: {type(err).__name__}: {err}")
            )
        self._cache_warm_until = time.monotonic() + CACHE_WINDOW_S
        return self._parse_message(message)

    async def _annotate_all(
        self, requests: list[dict[str, Any]], on_answer: Callable[[int, Annotation], None] | None = None
    ) -> list[Annotation]:
        semaphore = asyncio.Semaphore(self.config.max_concurrency)

        async def one(index: int, params: dict[str, Any]) -> Annotation:
            answer = await self._annotate_one(params, semaphore)
            if on_answer is not None:
                on_answer(index, answer)  # before any other answer is awaited
            return answer

        results: list[Annotation] = []
        rest = list(enumerate(requests))
        if self.config.warm_cache and len(requests) > 1 and time.monotonic() > self._cache_warm_until:
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

        Args:
            trajectories (`list[list[dict]]`): The trajectories.
            max_ratio (`float`): The ratio cap.
            feedback (`list[str | None]`, *optional*): Per trajectory, why the previous answer was rejected.
            on_answer (`Callable[[int, Annotation], None]`, *optional*): Called as each answer arrives,
                before the next is awaited (Message Batches: as each result is read), so a caller can
                store it durably.

        Returns:
            `list[Annotation]`: One per trajectory, in order; a request that failed after the SDK's
            retries is `Annotation(error=...)`.

        Raises:
            `OracleError`: A configuration failure (key, permissions, model) that no retry can fix.
            `InvalidInputError`: `feedback` differs in length from `trajectories`.
        """
        if not trajectories:
            return []
        feedback = list(feedback) if feedback is not None else [None] * len(trajectories)
        if len(feedback) != len(trajectories):
            raise InvalidInputError(f"feedback has {len(feedback)} entries for {len(trajectories)} trajectories.")
        requests = [self.request_params(t, max_ratio, f) for t, f in zip(trajectories, feedback)]
        if self.config.use_batches:
            answers = self._annotate_batch(requests)
            for i, answer in enumerate(answers):
                if on_answer is not None:
                    on_answer(i, answer)
            return answers
        return self._run(lambda: self._annotate_all(requests, on_answer))

    # ---------------------------------------------------------------- dry run

    def estimate_cost(self, trajectories: Sequence[list[dict[str, Any]]], max_ratio: float) -> CostEstimate:
        """Estimate what annotating `trajectories` costs, with `count_tokens` only (nothing generated).

        Args:
            trajectories (`list[list[dict]]`): The trajectories.
            max_ratio (`float`): The ratio cap.

        Returns:
            `CostEstimate`: Tokens and list-price cost, with and without prompt caching and batches.

        Raises:
            `OracleError`: The token count failed.
        """

        async def count(params: dict[str, Any], semaphore: asyncio.Semaphore) -> int:
            fields = {k: v for k, v in params.items() if k != "max_tokens"}
            async with semaphore:
                return (await self._requests.client.messages.count_tokens(**fields)).input_tokens

        async def count_all() -> list[int]:
            semaphore = asyncio.Semaphore(self.config.max_concurrency)
            prefix_probe = self.request_params([], max_ratio)
            prefix_probe["messages"] = [{"role": "user", "content": "."}]
            return await asyncio.gather(
                count(prefix_probe, semaphore),
                *(count(self.request_params(t, max_ratio), semaphore) for t in trajectories),
            )

        try:
            prefix, *counts = self._run(count_all)
        except anthropic.APIError as err:
            raise OracleError(f"the dry run could not count tokens: {self._describe(err)}") from None
        n, total = len(counts), sum(counts)
        output = n * self.config.assumed_output_tokens
        uncached = request_cost_usd(self.config.list_price, total, output)
        cached = uncached
        if n:
            cached = request_cost_usd(
                self.config.list_price, total - n * prefix, output, cache_write=prefix, cache_read=(n - 1) * prefix
            )
        return CostEstimate(
            trajectories=n,
            input_tokens=total,
            prefix_tokens=prefix,
            assumed_output_tokens=output,
            cost_usd=cached,
            cost_usd_without_caching=uncached,
            cost_usd_batches=request_cost_usd(self.config.list_price, total, output, batch=True),
        )


register_oracle(
    "anthropic",
    lambda model=None, seed=0, **options: AnthropicOracle(**({"model": model} if model else {}), **options),
    kind="llm",
    prompt_version=PROMPT_VERSION,
    default_model=DEFAULT_MODEL,
    overwrite=True,
)
