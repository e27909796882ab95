"""OpenAIChatOracle: any OpenAI-compatible server (vLLM, SGLang, TGI, `transformers serve`, OpenAI) as the selector.

It asks the question the Claude oracle asks (the same trajectory rendering and category
definitions, `atlas_hf.annotation.oracles.prompt`), one chat completion per trajectory, and gets the answer
the way the server allows (`answer_format`):

- `"tools"`: the answer tool, forced with `tool_choice` (vLLM with a tool parser, OpenAI, TGI);
- `"json_schema"`: `response_format` with the answer's JSON schema (vLLM, SGLang and OpenAI
  constrain decoding to it);
- `"text"`: neither; the answer is read from the reply's text (the first JSON object in it);
- `"auto"` (the default): the tool is offered, and a reply without a tool call is read as text, so
  a server that ignores tools (`transformers serve`) still works; a server that rejects tools with a
  400 is asked again as `"text"`, and so is every later request.

Durability is the annotator's and the SDK's, as for Claude: the `openai` SDK retries 408/409/429/5xx,
timeouts and dropped connections with exponential backoff and `retry-after` (capped at 60 s here),
requests run concurrently under `max_concurrency`, every answer reaches `on_answer` (the annotator's
cache) as it arrives, and a request that still fails, or an answer that cannot be read, becomes the
row's `atlas_error`. Only configuration errors (a rejected key, an unknown model) raise. The key is
read from `api_key_env` (`OPENAI_API_KEY`) and never appears in the config, `repr`, logs or errors.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
from dataclasses import dataclass, fields, replace
from types import SimpleNamespace
from typing import Any, Callable, Mapping, Sequence

from atlas_hf.errors import InvalidInputError, OracleError
from atlas_hf._openai import describe_openai_error, import_openai, openai_client
from atlas_hf.annotation.oracles.base import Annotation, Oracle
from atlas_hf.annotation.oracles.event_loop import ClientLoop
from atlas_hf.annotation.oracles.registry import register_oracle
from atlas_hf.trajectories.schema import format_identity
from atlas_hf.annotation.oracles.pricing import ModelPrice, OracleUsage
from atlas_hf.annotation.oracles.prompt import (
    ANSWER_TOOL,
    DEFAULT_MAX_CHARS_PER_OBSERVATION,
    SYSTEM_PROMPT,
    TOOL_NAME,
    build_user_message,
    parse_tool_input,
)

PROMPT_VERSION = "atlas-selector-openai-v1"
"""Stored in every annotation's `atlas_oracle` and part of the cache key: bump it when the prompt changes."""

ANSWER_FORMATS = ("auto", "tools", "json_schema", "text")

_HOW_TO_ANSWER = f"""## How to answer
If the tool `{TOOL_NAME}` is offered, call it once. Otherwise answer with one JSON object and \
nothing else: {{"plan": "...", "critical_steps": [{{"step": 0, "category": "...", "reason": "..."}}]}}, \
with the plan first and then the chosen steps in increasing order of step number.
"""
SYSTEM_PROMPT_OPENAI = re.sub(r"## How to answer\n.*?\n(?=## )", _HOW_TO_ANSWER + "\n", SYSTEM_PROMPT, flags=re.S)
"""The Claude oracle's system prompt, answering through the tool where offered and as JSON elsewhere."""

_ASK_TOOL = f"Answer by calling the tool `{TOOL_NAME}`."
_ASK_EITHER = f"Answer by calling the tool `{TOOL_NAME}` if it is offered, else with the JSON object alone."

OPENAI_ANSWER_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": TOOL_NAME,
        "description": ANSWER_TOOL["description"],
        "parameters": ANSWER_TOOL["input_schema"],
    },
}


@dataclass(frozen=True)
class OpenAIOracleConfig:
    """The settings of `OpenAIChatOracle`; nothing secret (the key is read from the environment).

    Parameters:
        > Parameters that decide the answers (part of the oracle's `identity`, so of the cache key)

        model (`str`): The model's name on the server (`vllm serve Qwen/Qwen3-32B` serves `Qwen/Qwen3-32B`).
        max_chars_per_observation (`int`): Observations longer than this are clipped in the middle.

        > Parameters of the server

        base_url (`str`, *optional*): The server's OpenAI-compatible address, e.g.
            `http://localhost:8000/v1`; the SDK's default (`OPENAI_BASE_URL`, else OpenAI) when None.
        api_key_env (`str`, defaults to `"OPENAI_API_KEY"`): The environment variable holding the key;
            a local server without one gets a placeholder.
        answer_format (`str`, defaults to `"auto"`): How the answer is asked for: `"auto"`, `"tools"`,
            `"json_schema"` or `"text"` (see the module's docstring).

        > Parameters that control the requests

        max_concurrency (`int`, defaults to `16`): Requests in flight at once (a server with continuous
            batching fills its batch with them).
        max_retries (`int`, defaults to `8`): The SDK's retries per request, honouring `retry-after` up to 60 s.
        timeout (`float`, defaults to `300.0`): Seconds before one attempt times out (then it is retried).
        max_tokens (`int`, defaults to `2048`): The answer's token budget.
        price (`ModelPrice`, *optional*): The model's price per million tokens, for the usage's cost (0 when None).

    Raises:
        `InvalidInputError`: No model, an unknown `answer_format`, or `max_concurrency` below 1.
    """

    model: str | None = None
    max_chars_per_observation: int = DEFAULT_MAX_CHARS_PER_OBSERVATION
    base_url: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    answer_format: str = "auto"
    max_concurrency: int = 16
    max_retries: int = 8
    timeout: float = 300.0
    max_tokens: int = 2048
    price: ModelPrice | None = None

    def __post_init__(self) -> None:
        if not self.model:
            raise InvalidInputError(
                "OpenAIChatOracle needs the model's name on the server: pass model= "
                "(`--model` on the command line), e.g. model='Qwen/Qwen3-32B'."
            )
        if self.answer_format not in ANSWER_FORMATS:
            raise InvalidInputError(f"answer_format must be one of {ANSWER_FORMATS}, got {self.answer_format!r}.")
        if self.max_concurrency < 1:
            raise InvalidInputError(f"max_concurrency must be at least 1, got {self.max_concurrency}.")


def _json_answer(text: str) -> Any:
    """The first JSON object in a reply's text (fences and prose around it ignored), or None."""
    start = text.find("{")
    while start >= 0:
        try:
            return json.JSONDecoder().raw_decode(text, start)[0]
        except json.JSONDecodeError:
            start = text.find("{", start + 1)
    return None


class OpenAIChatOracle(Oracle):
    """A model behind an OpenAI-compatible server as the ATLaS selector (implements `Oracle`).

    Args:
        config (`OpenAIOracleConfig`, *optional*): Every setting; `model` must be given here or below.
        **settings: Fields of `OpenAIOracleConfig` set on top of `config`
            (`OpenAIChatOracle(model="Qwen/Qwen3-32B", base_url="http://localhost:8000/v1")`).

    Raises:
        `InvalidInputError`: An unknown or invalid setting.
    """

    prompt_version = PROMPT_VERSION

    def __init__(self, config: OpenAIOracleConfig | None = None, **settings: Any) -> None:
        known = {f.name for f in fields(OpenAIOracleConfig)}
        unknown = sorted(set(settings) - known)
        if unknown:
            raise InvalidInputError(
                f"OpenAIChatOracle got unknown settings {unknown}; the settings are the "
                f"fields of OpenAIOracleConfig: {sorted(known)}."
            )
        self.config = replace(config, **settings) if config else OpenAIOracleConfig(**settings)
        self._init_runtime()

    def _init_runtime(self) -> None:
        self.usage = OracleUsage(self.config.price or ModelPrice(0.0, 0.0))
        self._requests = ClientLoop(
            lambda: openai_client(
                self.config.base_url, self._key(), self.config.max_retries, self.config.timeout, asynchronous=True
            ),
            "atlas-openai-loop",
        )
        self._pid = os.getpid()
        self._format = self.config.answer_format

    def __getstate__(self) -> dict[str, Any]:
        return {"config": self.config}  # no client, loop or counters: small, picklable, stable fingerprint

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._init_runtime()

    def __repr__(self) -> str:
        return f"OpenAIChatOracle({self.config!r})"

    @property
    def identity(self) -> str:
        """`openai(model=..., prompt=..., max_chars=...)`: the served model, prompt version and clipping."""
        return format_identity(
            "openai", model=self.config.model, prompt=PROMPT_VERSION, max_chars=self.config.max_chars_per_observation
        )

    @property
    def legacy_identity(self) -> str:
        """The identity of atlas_hf 0.6: the annotation cache also reads answers stored under it (until 0.8)."""
        return (
            f"OpenAIChatOracle/model={self.config.model}/prompt={PROMPT_VERSION}"
            f"/max_chars={self.config.max_chars_per_observation}"
        )

    def _key(self) -> str | None:
        return os.environ.get(self.config.api_key_env) or None

    def request_params(
        self, messages: Sequence[Mapping[str, Any]], max_ratio: float, feedback: str | None = None
    ) -> dict[str, Any]:
        """The chat-completion parameters of one trajectory's request.

        Args:
            messages (`list[dict]`): The trajectory.
            max_ratio (`float`): The ratio cap the prompt states.
            feedback (`str`, *optional*): Why the previous answer was rejected, shown to the model.

        Returns:
            `dict`: Keyword arguments of `client.chat.completions.create`.
        """
        params: dict[str, Any] = {
            "model": self.config.model,
            "max_tokens": self.config.max_tokens,
            "temperature": 0.0,
            "messages": [
                {"role": "system", "content": SYSTEM_PROMPT_OPENAI},
                {
                    "role": "user",
                    "content": build_user_message(
                        messages, max_ratio, feedback, self.config.max_chars_per_observation
                    ).replace(_ASK_TOOL, _ASK_EITHER),
                },
            ],
        }
        if self._format in ("auto", "tools"):
            params["tools"] = [OPENAI_ANSWER_TOOL]
            params["tool_choice"] = {"type": "function", "function": {"name": TOOL_NAME}}
        elif self._format == "json_schema":
            params["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": TOOL_NAME, "schema": ANSWER_TOOL["input_schema"], "strict": True},
            }
        return params

    def _parse(self, completion: Any) -> Annotation:
        """The answer in a completion: the tool call's arguments, else the first JSON object of its text."""
        try:
            usage = completion.usage
            if usage is not None:
                self.usage.add(
                    SimpleNamespace(input_tokens=usage.prompt_tokens, output_tokens=usage.completion_tokens)
                )
            choice = completion.choices[0]
            calls = [c for c in (choice.message.tool_calls or []) if getattr(c.function, "name", None) == TOOL_NAME]
            text = choice.message.content or ""
        except (AttributeError, IndexError, TypeError) as error:
            self.usage.failed_requests += 1
            return Annotation(error=f"malformed reply from the server: {type(error).__name__}: {error}.")
        if calls:
            try:
                return parse_tool_input(json.loads(calls[0].function.arguments or "{}"))
            except json.JSONDecodeError as error:
                return Annotation(error=f"the {TOOL_NAME} call's arguments are not JSON ({error.msg}).")
        if choice.finish_reason == "length":
            return Annotation(
                error=f"the answer was cut off at max_tokens={self.config.max_tokens}: raise max_tokens."
            )
        answer = _json_answer(text)
        if answer is None:
            return Annotation(error=f"the model answered without a tool call or a JSON object: {text[:120]!r}.")
        return parse_tool_input(answer)

    async def _one(self, params: dict[str, Any], semaphore: asyncio.Semaphore) -> Annotation:
        openai = import_openai()
        try:
            async with semaphore:
                completion = await self._requests.client.chat.completions.create(**params)
        except openai.BadRequestError as error:
            if self.config.answer_format == "auto" and "tools" in params:
                self._format = "text"  # the server takes no tools: ask as text from now on
                return await self._one(
                    {k: v for k, v in params.items() if k not in ("tools", "tool_choice")}, semaphore
                )
            self.usage.failed_requests += 1
            return Annotation(error=describe_openai_error(error, self._key())[0])
        except openai.APIError as error:
            text, config = describe_openai_error(error, self._key())
            if config:
                raise OracleError(
                    f"{text}. This is a configuration problem (key, permissions or model "
                    f"{self.config.model!r}), so no trajectory can succeed: fix it and run again."
                ) from None
            self.usage.failed_requests += 1
            return Annotation(error=text)
        except (ValueError, TypeError, KeyError, AttributeError) as error:  # a body the SDK could not read
            self.usage.failed_requests += 1
            return Annotation(error=f"malformed reply from the server: {type(error).__name__}: {str(error)[:200]}")
        return self._parse(completion)

    def _run(
        self, requests: list[dict[str, Any]], on_answer: Callable[[int, Annotation], None] | None
    ) -> list[Annotation]:
        if self._pid != os.getpid():  # forked: the parent's client and loop are not ours
            self._init_runtime()

        async def all_requests() -> list[Annotation]:
            semaphore = asyncio.Semaphore(self.config.max_concurrency)

            async def one(index: int, params: dict[str, Any]) -> Annotation:
                answer = await self._one(params, semaphore)
                if on_answer is not None:
                    on_answer(index, answer)  # stored before any other answer is awaited
                return answer

            tasks = [asyncio.ensure_future(one(i, p)) for i, p in enumerate(requests)]
            try:
                return list(await asyncio.gather(*tasks))
            finally:
                for task in tasks:
                    task.cancel()

        return self._requests.run(all_requests)

    def annotate(
        self,
        trajectories: Sequence[list[dict[str, Any]]],
        max_ratio: float,
        feedback: Sequence[str | None] | None = None,
        on_answer: Callable[[int, Annotation], None] | None = None,
    ) -> list[Annotation]:
        """Annotate canonical `messages` lists, one request each, concurrently.

        Args:
            trajectories (`list[list[dict]]`): The trajectories.
            max_ratio (`float`): The ratio cap.
            feedback (`list[str | None]`, *optional*): Per trajectory, why the previous answer was rejected.
            on_answer (`Callable[[int, Annotation], None]`, *optional*): Called as each answer arrives.

        Returns:
            `list[Annotation]`: One per trajectory, in order; a failed request or an unreadable answer
            is `Annotation(error=...)`.

        Raises:
            `OracleError`: A configuration failure (key, permissions, model) that no retry can fix.
            `InvalidInputError`: `feedback` differs in length from `trajectories`, or `openai` is missing.
        """
        if not trajectories:
            return []
        feedback = list(feedback) if feedback is not None else [None] * len(trajectories)
        if len(feedback) != len(trajectories):
            raise InvalidInputError(f"feedback has {len(feedback)} entries for {len(trajectories)} trajectories.")
        import_openai()
        requests = [self.request_params(t, max_ratio, f) for t, f in zip(trajectories, feedback)]
        return self._run(requests, on_answer)

    def close(self) -> None:
        """Close the HTTP client and stop the event loop thread (rebuilt on next use)."""
        self._requests.close()


register_oracle(
    "openai",
    lambda model=None, seed=0, **options: OpenAIChatOracle(model=model, **options),
    kind="llm",
    prompt_version=PROMPT_VERSION,
    overwrite=True,
)
