"""`AnthropicOracleConfig`: every setting of `AnthropicOracle`, and nothing secret.

The config is what an oracle pickles (for `Dataset.map(num_proc=...)`) and what `datasets`
fingerprints, so it holds no API key and no client. Importing it does not import the SDK.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from atlas_hf.errors import InvalidInputError
from atlas_hf.annotation.oracles.pricing import PRICES, ModelPrice, price_for
from atlas_hf.annotation.oracles.prompt import DEFAULT_MAX_CHARS_PER_OBSERVATION

DEFAULT_MODEL = "claude-sonnet-4-6"
"""A current Sonnet (balanced price and judgement) known to the installed SDK, with a known price."""


@dataclass(frozen=True)
class AnthropicOracleConfig:
    """The settings of `AnthropicOracle`, grouped as the oracle uses them.

    Parameters:
        > Parameters that decide the answers (they are part of the oracle's `identity`, so of the cache key)

        model (`str`, defaults to `DEFAULT_MODEL`): The Claude model.
        max_chars_per_observation (`int`): Observations longer than this are clipped in the middle.

        > Parameters that control the requests

        base_url (`str`, *optional*): The API's address (a proxy, a stand-in); the SDK's default when None.
        max_concurrency (`int`, defaults to `16`): Requests in flight at once within one `annotate` call.
        max_retries (`int`, defaults to `8`): The SDK's retries per request (429, 529, 5xx, timeouts,
            dropped connections), honouring `retry-after` up to 60 s.
        timeout (`float`, defaults to `120.0`): Seconds before one attempt times out (then it is retried).
        max_tokens (`int`, defaults to `2048`): The answer's token budget.
        warm_cache (`bool`, defaults to `True`): When the prompt cache is cold, send one request alone
            first so the others read the cached prefix instead of all writing it at once.

        > Parameters of Message Batches (half price, slower)

        use_batches (`bool`, defaults to `False`): Send each `annotate` call as Message Batches (map with
            a large `batch_size`, or `batch_size=None`, so every request is submitted before any is awaited).
        batch_state_dir (`str`, *optional*): Where batch ids are stored so an interrupted run resumes its
            batches; `~/.cache/atlas_hf/anthropic_batches` when None.
        max_batch_requests (`int`, defaults to `100000`) and max_batch_bytes (`int`, defaults to `200000000`):
            The most requests, and bytes of request JSON, in one batch (the API allows 100,000 and 256 MB).
        batch_poll_interval (`float`, defaults to `30.0`): Seconds between polls of a running batch.

        > Parameters of cost accounting

        price (`ModelPrice`, *optional*): The model's list price; required for a model not in `PRICES`.
        assumed_output_tokens (`int`, defaults to `400`): Output tokens per trajectory that
            `estimate_cost` assumes.

    Raises:
        `InvalidInputError`: A setting is out of range, or the model has no known price and none is given.
    """

    model: str = DEFAULT_MODEL
    max_chars_per_observation: int = DEFAULT_MAX_CHARS_PER_OBSERVATION
    base_url: str | None = None
    max_concurrency: int = 16
    max_retries: int = 8
    timeout: float = 120.0
    max_tokens: int = 2048
    warm_cache: bool = True
    use_batches: bool = False
    batch_state_dir: str | os.PathLike[str] | None = None
    max_batch_requests: int = 100_000
    max_batch_bytes: int = 200_000_000
    batch_poll_interval: float = 30.0
    price: ModelPrice | None = field(default=None)
    assumed_output_tokens: int = 400

    def __post_init__(self) -> None:
        if self.max_concurrency < 1:
            raise InvalidInputError(f"max_concurrency must be at least 1, got {self.max_concurrency}.")
        if not 1 <= self.max_batch_requests <= 100_000 or self.max_batch_bytes < 1:
            raise InvalidInputError(
                f"max_batch_requests must be in [1, 100000] and max_batch_bytes positive, got "
                f"{self.max_batch_requests} and {self.max_batch_bytes}."
            )
        if self.price is None and price_for(self.model) is None:
            raise InvalidInputError(
                f"no list price is known for model {self.model!r}: pass price=ModelPrice(input_per_mtok=..., "
                f"output_per_mtok=...) (known: {sorted(PRICES)})."
            )

    @property
    def list_price(self) -> ModelPrice:
        """`price`, or the model's from `PRICES`."""
        return self.price or price_for(self.model)  # type: ignore[return-value]  # checked in __post_init__

    @property
    def batch_folder(self) -> Path:
        """`batch_state_dir`, or `~/.cache/atlas_hf/anthropic_batches`."""
        return Path(self.batch_state_dir or Path.home() / ".cache" / "atlas_hf" / "anthropic_batches")
