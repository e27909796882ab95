"""Oracles by name: the registry behind `--oracle` in the CLI and the recipes.

An oracle is registered with a factory `factory(model: str | None, seed: int, **options) -> Oracle`;
the built-in ones import their module only when built, so listing the names loads nothing. A
plugin registers its own the same way:

    >>> from atlas_hf.annotation.oracles import register_oracle, build_oracle
    >>> from atlas_hf.annotation.oracles.baselines import AllStepsOracle
    >>> register_oracle("everything", lambda model=None, seed=0, **options: AllStepsOracle())
    >>> type(build_oracle("everything")).__name__
    'AllStepsOracle'
"""

from __future__ import annotations

import os
from typing import Any, Callable

from atlas_hf.errors import InvalidInputError

OracleFactory = Callable[..., Any]


def _local_model(model: str | None) -> dict[str, Any]:
    if not model:
        return {}
    from atlas_hf.models import load_model_and_tokenizer

    loaded, tokenizer = load_model_and_tokenizer(model)
    return {"model": loaded, "tokenizer": tokenizer}


def _anthropic(model: str | None = None, seed: int = 0, **options: Any) -> Any:
    from atlas_hf.annotation.oracles.anthropic import AnthropicOracle

    return AnthropicOracle(**({"model": model} if model else {}), **options)


def _openai(model: str | None = None, seed: int = 0, **options: Any) -> Any:
    from atlas_hf.annotation.oracles.openai_chat import OpenAIChatOracle

    return OpenAIChatOracle(model=model, **options)


def _local(model: str | None = None, seed: int = 0, **options: Any) -> Any:
    from atlas_hf.annotation.oracles.local import LocalOracle

    return LocalOracle(**_local_model(model), **options)


def _perplexity(model: str | None = None, seed: int = 0, **options: Any) -> Any:
    from atlas_hf.annotation.oracles.baselines import PerplexityOracle

    return PerplexityOracle(**_local_model(model), **options)


def _random(model: str | None = None, seed: int = 0, **options: Any) -> Any:
    from atlas_hf.annotation.oracles.baselines import RandomOracle

    return RandomOracle(seed=seed, **options)


def _all(model: str | None = None, seed: int = 0, **options: Any) -> Any:
    from atlas_hf.annotation.oracles.baselines import AllStepsOracle

    return AllStepsOracle(**options)


_REGISTRY: dict[str, OracleFactory] = {
    "anthropic": _anthropic,
    "openai": _openai,
    "local": _local,
    "random": _random,
    "all": _all,
    "perplexity": _perplexity,
}


def register_oracle(name: str, factory: OracleFactory, *, overwrite: bool = False) -> None:
    """Make `factory` buildable as `build_oracle(name)` and `--oracle name`.

    Args:
        name (`str`): The oracle's name.
        factory (`Callable`): `factory(model=None, seed=0, **options)` returning an oracle (an object
            with `annotate(trajectories)`, see `atlas_hf.annotation.oracles.Oracle`).
        overwrite (`bool`): Replace an oracle already registered under `name`.

    Raises:
        `ValueError`: `name` is taken and `overwrite` is not set.
    """
    if name in _REGISTRY and not overwrite:
        raise InvalidInputError(f"An oracle named {name!r} is already registered; pass overwrite=True to replace it.")
    _REGISTRY[name] = factory


def list_oracles() -> list[str]:
    """The registered oracle names, built-in ones first.

    Returns:
        `list[str]`: e.g. `["anthropic", "openai", "local", "random", "all", "perplexity"]`.
    """
    return list(_REGISTRY)


def build_oracle(name: str, *, model: str | None = None, seed: int = 0, **options: Any) -> Any:
    """The oracle registered as `name`.

    Args:
        name (`str`): One of `list_oracles()`.
        model (`str`, *optional*): The oracle's model: a Claude model id for `anthropic`, the served
            model's name for `openai` (with `base_url=` its server), a local
            model folder or Hub id for `local` and `perplexity`; ignored by `random` and `all`.
        seed (`int`): The seed of the `random` baseline.
        **options: Keyword arguments of the oracle's class (e.g. `timeout=`, `max_retries=`,
            `use_batches=` for `anthropic`).

    Returns:
        `Oracle`: The oracle, its client or model built lazily where it has one.

    Raises:
        `ValueError`: No oracle is registered as `name`.
    """
    factory = _REGISTRY.get(name)
    if factory is None:
        raise InvalidInputError(f"Unknown oracle {name!r}; choose one of {', '.join(_REGISTRY)} (or register_oracle it).")
    return factory(model=model, seed=seed, **options)


def default_oracle_name() -> str:
    """Claude (`"anthropic"`) when `ANTHROPIC_API_KEY` is set, the local SmolLM2 judge (`"local"`) otherwise.

    Returns:
        `str`: The oracle name.
    """
    return "anthropic" if os.environ.get("ANTHROPIC_API_KEY") else "local"
