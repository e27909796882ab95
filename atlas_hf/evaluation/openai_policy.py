"""OpenAIChatPolicy: rollouts through an OpenAI-compatible server (vLLM, SGLang, TGI, `transformers serve`).

Every live episode's next turn is one chat completion, all in flight at once (up to
`max_concurrency`), so a server with continuous batching fills its batch. Decoding is greedy
(`temperature=0`), bounded by `max_tokens`, with the server's own stop at the end of the turn (and
any `stop` strings given). The `openai` SDK times out and retries each request (`max_retries`); a
request that still fails becomes a `PolicyFailure`, which `evaluate_agent` records as that episode's
failure, with the reason, and replays on resume. A rejected key or an unknown model raises: no episode
could succeed.

The server renders the conversation with its own chat template: serve the template the agent was
trained with (`atlas_hf.training_template(tokenizer)`, passed to vLLM as `--chat-template`), or the
rollouts are not the agent's.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import Any, Sequence

from atlas_hf.errors import InvalidInputError
from atlas_hf._openai import describe_openai_error, import_openai, openai_client
from atlas_hf.evaluation.policy import Conversation, PolicyFailure, ReplyCallback


class OpenAIChatPolicy:
    """A model behind an OpenAI-compatible server as a policy for `evaluate_agent`.

    Args:
        model (`str`): The model's name on the server (an adapter served with `--enable-lora` has its own name).
        base_url (`str`, *optional*): The server's address, e.g. `http://localhost:8000/v1`; the SDK's
            default (`OPENAI_BASE_URL`, else OpenAI) when None.
        max_tokens (`int`, defaults to `64`): The longest reply.
        max_concurrency (`int`, defaults to `16`): Requests in flight at once.
        timeout (`float`, defaults to `60.0`): Seconds per attempt.
        max_retries (`int`, defaults to `2`): The SDK's retries per request (429, 5xx, timeouts, dropped
            connections), honouring `retry-after` up to 60 s.
        stop (`list[str]`, *optional*): Extra stop strings (the server stops at the end of the turn anyway).
        api_key_env (`str`, defaults to `"OPENAI_API_KEY"`): The environment variable holding the key
            (never logged); a local server without one gets a placeholder.
        extra_body (`dict`, *optional*): Server-specific parameters sent with every request (vLLM's
            `{"top_k": 1}`, `{"chat_template_kwargs": {...}}`).

    Raises:
        `InvalidInputError`: No model, `max_concurrency` below 1, or the `openai` package is missing.
    """

    def __init__(
        self,
        model: str,
        base_url: str | None = None,
        *,
        max_tokens: int = 64,
        max_concurrency: int = 16,
        timeout: float = 60.0,
        max_retries: int = 2,
        stop: Sequence[str] | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        extra_body: dict[str, Any] | None = None,
    ) -> None:
        if not model:
            raise InvalidInputError("OpenAIChatPolicy needs the model's name on the server (`--model`).")
        if max_concurrency < 1:
            raise InvalidInputError(f"max_concurrency must be at least 1, got {max_concurrency}.")
        import_openai()
        self.model, self.base_url, self.max_tokens, self.max_concurrency = model, base_url, max_tokens, max_concurrency
        self.stop, self.extra_body, self.api_key_env = list(stop or []), dict(extra_body or {}), api_key_env
        self._client = openai_client(base_url, os.environ.get(api_key_env), max_retries, timeout, asynchronous=False)
        self._pool = ThreadPoolExecutor(max_concurrency, thread_name_prefix="atlas-policy")

    def __repr__(self) -> str:
        return f"OpenAIChatPolicy(model={self.model!r}, base_url={self.base_url!r})"

    def _reply(self, conversation: Conversation) -> str | PolicyFailure:
        openai = import_openai()
        params: dict[str, Any] = {
            "model": self.model,
            "messages": conversation,
            "max_tokens": self.max_tokens,
            "temperature": 0.0,
        }
        if self.stop:
            params["stop"] = self.stop
        if self.extra_body:
            params["extra_body"] = self.extra_body
        try:
            completion = self._client.chat.completions.create(**params)
            return (completion.choices[0].message.content or "").strip()
        except openai.APIError as error:
            text, config = describe_openai_error(error, os.environ.get(self.api_key_env))
            if config:
                raise InvalidInputError(
                    f"{text}. Check the key, the model name {self.model!r} and the server "
                    f"{self.base_url!r}: no episode can be played."
                ) from None
            return PolicyFailure(text)
        except (AttributeError, IndexError, TypeError, ValueError) as error:  # a body the SDK could not read
            return PolicyFailure(f"malformed reply from the server: {type(error).__name__}: {str(error)[:200]}")

    def __call__(
        self, conversations: list[Conversation], on_reply: ReplyCallback | None = None
    ) -> list[str | PolicyFailure]:
        """The next turn of every conversation, requested concurrently.

        Args:
            conversations (`list[list[dict]]`): Each live episode's messages so far.
            on_reply (`Callable[[int, str | PolicyFailure], None]`, *optional*): Called with a row's index
                and reply as each request completes, in the calling thread.

        Returns:
            `list[str | PolicyFailure]`: One reply per conversation, in order.

        Raises:
            `InvalidInputError`: The server rejected the key or does not serve the model.
        """
        futures = {self._pool.submit(self._reply, c): i for i, c in enumerate(conversations)}
        replies: list[str | PolicyFailure] = [""] * len(conversations)
        for future in as_completed(futures):
            replies[futures[future]] = future.result()
            if on_reply is not None:
                on_reply(futures[future], replies[futures[future]])
        return replies

    def close(self) -> None:
        """Close the HTTP client and the request threads."""
        self._pool.shutdown(wait=False)
        self._client.close()
