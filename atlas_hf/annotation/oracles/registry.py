"""Oracles by name, each registered by its own module with what it is: PEFT's registry pattern.

Each built-in oracle module ends with a `register_oracle(...)` call that names the oracle, says how to
build it and what it is (an LLM selector or a baseline, its prompt version, what the dataset card
says of it). The registry knows only which module holds each built-in name, so listing the names
loads nothing; the module is imported the first time its oracle is built or described. An oracle's
`identity` starts with its registered name (`atlas_hf.trajectories.schema.format_identity`), so a
card made from the `atlas_oracle` column alone finds the same description. A plugin registers its
own the same way:

    >>> from atlas_hf.annotation.oracles import register_oracle, build_oracle
    >>> from atlas_hf.annotation.oracles.baselines import AllStepsOracle
    >>> register_oracle("everything", lambda model=None, seed=0, **options: AllStepsOracle(), kind="baseline")
    >>> type(build_oracle("everything")).__name__
    'AllStepsOracle'
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from typing import Any, Callable, Literal

from atlas_hf.errors import InvalidInputError

OracleFactory = Callable[..., Any]

LLM_CARD_TEXT = (
    "An oracle LLM read each trajectory, wrote a short high-level plan, then named its critical steps, "
    "each with one category: Plan Creation, Critical Observation, Critical Action or Self Correction."
)
"""What a dataset card says of an oracle that registers no text of its own."""

_BUILT_IN: dict[str, str] = {
    "anthropic": "atlas_hf.annotation.oracles.anthropic",
    "openai": "atlas_hf.annotation.oracles.openai_chat",
    "local": "atlas_hf.annotation.oracles.local",
    "random": "atlas_hf.annotation.oracles.baselines",
    "all": "atlas_hf.annotation.oracles.baselines",
    "perplexity": "atlas_hf.annotation.oracles.baselines",
}
"""Where each built-in oracle registers itself (imported on first use)."""


@dataclass(frozen=True)
class OracleInfo:
    """A registered oracle: how to build it and what it is.

    Attributes:
        name (`str`): The name `build_oracle` and `--oracle` take, and the head of its `identity`.
        factory (`Callable`): `factory(model=None, seed=0, **options)` returning the oracle.
        kind (`str`): `"llm"` (a model chooses the steps) or `"baseline"` (a rule does: the paper's
            comparison rows).
        card_text (`str`): How the steps were chosen, as the dataset card says it.
        prompt_version (`str`, *optional*): The version of the prompt it asks with, if any.
        default_model (`str`, *optional*): The model it uses when given none, if any.
    """

    name: str
    factory: OracleFactory
    kind: Literal["llm", "baseline"] = "llm"
    card_text: str = LLM_CARD_TEXT
    prompt_version: str | None = None
    default_model: str | None = None


_REGISTRY: dict[str, OracleInfo] = {}


def register_oracle(
    name: str,
    factory: OracleFactory,
    *,
    kind: Literal["llm", "baseline"] = "llm",
    card_text: str | None = None,
    prompt_version: str | None = None,
    default_model: str | None = None,
    overwrite: bool = False,
) -> OracleInfo:
    """Make `factory` buildable as `build_oracle(name)` and `--oracle name`, with what it is.

    Args:
        name (`str`): The oracle's name; its identities should start with it (`format_identity(name, ...)`).
        factory (`Callable`): `factory(model=None, seed=0, **options)` returning an oracle (an object
            with `identity` and `annotate(trajectories, max_ratio)`, see `atlas_hf.annotation.oracles.Oracle`).
        kind (`str`, defaults to `"llm"`): `"llm"` or `"baseline"`.
        card_text (`str`, *optional*): How it chooses the steps, for dataset cards (default: the LLM text).
        prompt_version (`str`, *optional*): The version of its prompt.
        default_model (`str`, *optional*): The model it uses when given none.
        overwrite (`bool`): Replace an oracle already registered under `name`.

    Returns:
        `OracleInfo`: What was registered.

    Raises:
        `InvalidInputError`: `name` is taken and `overwrite` is not set, or `kind` is unknown.
    """
    if name in _REGISTRY and not overwrite:
        raise InvalidInputError(f"An oracle named {name!r} is already registered; pass overwrite=True to replace it.")
    if kind not in ("llm", "baseline"):
        raise InvalidInputError(f"kind must be 'llm' or 'baseline', got {kind!r}.")
    info = OracleInfo(name, factory, kind, card_text or LLM_CARD_TEXT, prompt_version, default_model)
    _REGISTRY[name] = info
    return info


def list_oracles() -> list[str]:
    """The registered oracle names, built-in ones first (nothing is imported).

    Returns:
        `list[str]`: e.g. `["anthropic", "openai", "local", "random", "all", "perplexity"]`.
    """
    return [*_BUILT_IN, *(name for name in _REGISTRY if name not in _BUILT_IN)]


def oracle_info(name: str) -> OracleInfo | None:
    """What the oracle registered as `name` is (its module imported if it is a built-in not yet loaded).

    Args:
        name (`str`): An oracle name, e.g. the `name` of `parse_identity(row["atlas_oracle"])`.

    Returns:
        `OracleInfo | None`: None for a name nobody registered in this process.
    """
    if name not in _REGISTRY and name in _BUILT_IN:
        importlib.import_module(_BUILT_IN[name])
    return _REGISTRY.get(name)


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
        `InvalidInputError`: No oracle is registered as `name`.
    """
    info = oracle_info(name)
    if info is None:
        raise InvalidInputError(
            f"Unknown oracle {name!r}; choose one of {', '.join(list_oracles())} (or register_oracle it)."
        )
    return info.factory(model=model, seed=seed, **options)


def default_oracle_name() -> str:
    """Claude (`"anthropic"`) when `ANTHROPIC_API_KEY` is set, the local SmolLM2 judge (`"local"`) otherwise.

    Returns:
        `str`: The oracle name.
    """
    return "anthropic" if os.environ.get("ANTHROPIC_API_KEY") else "local"
