"""The text-environment protocol that the evaluator and the expert demos share, and its registry.

A text environment is an episode of turns in plain text: `reset(seed)` returns the first user
message (instructions, task and first observation in one text), `step(action_text)` plays one
assistant reply and returns the next observation. The same strings are what the expert demos
hold and what the evaluator shows a model, so a policy trained on the demos sees at evaluation
exactly the format it learnt.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol, runtime_checkable

from atlas_hf.errors import EnvironmentNotFoundError


@dataclass
class StepResult:
    """What one `TextEnv.step` returns.

    Attributes:
        observation (`str`): The next user message: what the action did and what is seen now.
        reward (`float`): The environment's reward for this step (BabyAI: > 0 only on success).
        done (`bool`): Whether the episode is over (success, failure or the environment's own time limit).
        info (`dict`): `success` (bool), `invalid_action` (bool: unparsable or naming nothing that can be
            done now), and environment-specific details.
    """

    observation: str
    reward: float
    done: bool
    info: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class TextEnv(Protocol):
    """An environment played in text, one assistant turn per `step`."""

    name: str

    def reset(self, seed: int) -> str:
        """Start the episode of environment seed `seed`; return the first user message."""
        ...

    def step(self, action_text: str) -> StepResult:
        """Play one reply of the agent (free text: a thought and an action); never raises on bad text."""
        ...


_REGISTRY: dict[str, tuple[str, Callable[..., TextEnv] | str]] = {}


def register_env(name: str, factory: Callable[..., TextEnv] | str, description: str = "") -> None:
    """Make `make_env(name)` build an environment with `factory(**kwargs)`.

    Args:
        name (`str`): The environment's name, `"<family>/<level>"` by convention (`"babyai/GoToLocal"`).
        factory (`Callable` or `str`): A callable returning a `TextEnv`, or `"module:attribute"` imported
            on first use (so optional dependencies load only when the environment is built).
        description (`str`): One line shown by `list_envs`.
    """
    _REGISTRY[name] = (description, factory)


def list_envs() -> dict[str, str]:
    """The registered environments: name -> one-line description."""
    return {name: description for name, (description, _) in sorted(_REGISTRY.items())}


def make_env(name: str, **kwargs: Any) -> TextEnv:
    """Build a registered text environment.

    Args:
        name (`str`): A name from `list_envs()`, e.g. `"babyai/GoToLocal"`.
        **kwargs: Passed to the environment's constructor.

    Returns:
        `TextEnv`: A fresh environment; call `reset(seed)` before `step`.

    Raises:
        `EnvironmentNotFoundError`: `name` is not registered (the message lists the names that are).
        `ImportError`: The environment's optional dependency is missing (the message says what to install).
    """
    if name not in _REGISTRY:
        known = ", ".join(sorted(_REGISTRY)) or "none"
        raise EnvironmentNotFoundError(f"Unknown environment {name!r}. Registered environments: {known}.")
    _, factory = _REGISTRY[name]
    if isinstance(factory, str):
        module, _, attribute = factory.partition(":")
        factory = getattr(importlib.import_module(module), attribute)
    return factory(**kwargs)
