"""The `openai` SDK clients atlas_hf uses: the SDK's own retries, with server-asked waits capped.

Shared by `OpenAIChatOracle` (`atlas_hf.annotation.oracles.openai_chat`) and `OpenAIChatPolicy`
(`atlas_hf.evaluation.openai_policy`). `openai` is an optional extra: `pip install "atlas-hf[openai]"`.
"""

from __future__ import annotations

from typing import Any

from atlas_hf._upstream import CappedRetryAfter
from atlas_hf.errors import InvalidInputError


def import_openai() -> Any:
    """The `openai` module.

    Returns:
        `module`: `openai`.

    Raises:
        `InvalidInputError`: It is not installed (the message says what to install).
    """
    try:
        import openai
    except ImportError:
        raise InvalidInputError(
            'the OpenAI-compatible oracle and policy need the `openai` package: pip install "atlas-hf[openai]"'
        ) from None
    return openai


def openai_client(
    base_url: str | None, api_key: str | None, max_retries: int, timeout: float, asynchronous: bool
) -> Any:
    """An `openai` client with the SDK's retries, its waits on `retry-after` capped (`_upstream.MAX_RETRY_AFTER`).

    Args:
        base_url (`str`, *optional*): The server; the SDK's default when None.
        api_key (`str`, *optional*): The key; a placeholder for a local server when None.
        max_retries (`int`): The SDK's retries per request.
        timeout (`float`): Seconds per attempt.
        asynchronous (`bool`): `AsyncOpenAI` rather than `OpenAI`.

    Returns:
        `openai.OpenAI` or `openai.AsyncOpenAI`: The client.

    Raises:
        `InvalidInputError`: The `openai` package is not installed.
    """
    openai = import_openai()
    base = openai.AsyncOpenAI if asynchronous else openai.OpenAI

    class Client(CappedRetryAfter, base):  # type: ignore[misc, valid-type]
        pass

    return Client(base_url=base_url, api_key=api_key or "not-needed", max_retries=max_retries, timeout=timeout)


def describe_openai_error(error: BaseException, secret: str | None) -> tuple[str, bool]:
    """What went wrong with a request, without the key, and whether it is a configuration error.

    Args:
        error (`BaseException`): What the SDK raised.
        secret (`str`, *optional*): The key, to redact.

    Returns:
        `tuple[str, bool]`: The description, and True for a rejected key, a forbidden or unknown model
        (no retry or other request can succeed).
    """
    openai = import_openai()
    if isinstance(error, openai.APIStatusError):
        text = f"server error {error.status_code}: {str(error)[:300]}"
    elif isinstance(error, openai.APITimeoutError):
        text = "the request timed out (after the SDK's retries)"
    elif isinstance(error, openai.APIConnectionError):
        text = f"the connection failed (after the SDK's retries): {error}"
    else:
        text = f"{type(error).__name__}: {str(error)[:300]}"
    config = isinstance(error, (openai.AuthenticationError, openai.PermissionDeniedError, openai.NotFoundError))
    return (text.replace(secret, "<redacted>") if secret else text), config
