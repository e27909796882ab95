"""An async SDK client on an event loop of its own, for the oracles that send many requests at once."""

from __future__ import annotations

import asyncio
import threading
from typing import Any, Awaitable, Callable, TypeVar

T = TypeVar("T")


class ClientLoop:
    """An asyncio event loop in a daemon thread, with an async client built on it at first use.

    A synchronous caller (a `Dataset.map` function, or code already inside a running loop, as in a
    notebook) runs coroutines on it and waits for their results. The loop and the client are made
    again after `close()`. A forked process must make its own `ClientLoop` (the parent's thread is not
    in the child).

    Args:
        make_client (`Callable[[], Any]`): Builds the async client (an `AsyncAnthropic`, an `AsyncOpenAI`);
            called on the loop's thread.
        name (`str`): The thread's name.
    """

    def __init__(self, make_client: Callable[[], Any], name: str) -> None:
        self._make_client, self._name = make_client, name
        self._loop: asyncio.AbstractEventLoop | None = None
        self.client: Any = None

    def run(self, make: Callable[[], Awaitable[T]]) -> T:
        """Run `make()` on the loop, with `self.client` built, and wait for its result.

        Args:
            make (`Callable[[], Awaitable]`): Makes the coroutine (called on the loop's thread).

        Returns:
            The coroutine's result.

        Raises:
            Whatever the coroutine raises.
        """
        if self._loop is None or self._loop.is_closed():
            self._loop = asyncio.new_event_loop()
            threading.Thread(target=self._loop.run_forever, name=self._name, daemon=True).start()
            self.client = None

        async def with_client() -> T:
            if self.client is None:
                self.client = self._make_client()
            return await make()

        return asyncio.run_coroutine_threadsafe(with_client(), self._loop).result()

    def close(self) -> None:
        """Close the client and stop the loop's thread."""
        if self._loop is not None and not self._loop.is_closed():
            if self.client is not None:
                asyncio.run_coroutine_threadsafe(self.client.close(), self._loop).result()
            self._loop.call_soon_threadsafe(self._loop.stop)
        self.client, self._loop = None, None
