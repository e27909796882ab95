"""Claude's list prices, the usage an oracle counts, and what a run costs (or would cost)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

CACHE_WRITE_MULTIPLIER = 1.25  # 5-minute cache writes cost 1.25x the input price
CACHE_READ_MULTIPLIER = 0.1  # cache reads cost 0.1x the input price
BATCH_DISCOUNT = 0.5  # Message Batches cost half of every token price


@dataclass(frozen=True)
class ModelPrice:
    """List prices of one model, in USD per million tokens.

    Attributes:
        input_per_mtok (`float`): Uncached input tokens.
        output_per_mtok (`float`): Output tokens.
    """

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
    """Tokens and requests an oracle has used so far, and what they cost at list price.

    Attributes:
        price (`ModelPrice`): The model's list price.
        input_tokens, output_tokens, cache_creation_input_tokens, cache_read_input_tokens (`int`): Tokens
            as the API reports them.
        requests (`int`): Answered requests; `batch_requests` of them through Message Batches.
        failed_requests (`int`): Requests that failed after the SDK's retries.
    """

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
        """Count one answered request.

        Args:
            usage (`anthropic.types.Usage`): The response's usage.
            batch (`bool`, defaults to `False`): It came through Message Batches (half price).
        """
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

    def progress_fields(self) -> dict[str, str]:
        """`{"tokens": ..., "cost": ...}` for progress bars: every token counted, and the cost so far."""
        tokens = (
            self.input_tokens + self.output_tokens + self.cache_creation_input_tokens + self.cache_read_input_tokens
        )
        return {"tokens": f"{tokens:,}", "cost": f"${self._cost_usd:.4f}"}

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
    price: ModelPrice,
    input_tokens: int,
    output_tokens: int,
    cache_write: int = 0,
    cache_read: int = 0,
    batch: bool = False,
) -> float:
    """The list price of one request's tokens.

    Args:
        price (`ModelPrice`): The model's list price.
        input_tokens, output_tokens (`int`): Uncached input and output tokens.
        cache_write, cache_read (`int`): Input tokens written to and read from the prompt cache.
        batch (`bool`, defaults to `False`): Through Message Batches (half price).

    Returns:
        `float`: USD.
    """
    units = (
        input_tokens * price.input_per_mtok
        + cache_write * price.input_per_mtok * CACHE_WRITE_MULTIPLIER
        + cache_read * price.input_per_mtok * CACHE_READ_MULTIPLIER
        + output_tokens * price.output_per_mtok
    )
    return units / 1e6 * (BATCH_DISCOUNT if batch else 1.0)


@dataclass
class CostEstimate:
    """A dry run's estimate for annotating some trajectories (no tokens generated).

    Attributes:
        trajectories (`int`): Trajectories counted.
        input_tokens (`int`): Input tokens of all their requests.
        prefix_tokens (`int`): The cacheable prefix (system prompt and tool) of one request.
        assumed_output_tokens (`int`): Output tokens assumed for all of them.
        cost_usd (`float`): With prompt caching; `cost_usd_without_caching` without it;
            `cost_usd_batches` through Message Batches.
    """

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
