"""The `anthropic` SDK clients the oracle uses: the SDK's own retries, with server-asked waits capped."""

from __future__ import annotations

from typing import Any

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


CONFIG_ERRORS = (anthropic.AuthenticationError, anthropic.PermissionDeniedError, anthropic.NotFoundError)
"""Errors no retry or other row can fix (a rejected key, a forbidden or missing model): they raise."""
