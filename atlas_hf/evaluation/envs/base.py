"""The text-environment protocol that the evaluator and the expert demos share, and its registry.

A text environment is an episode of turns in plain text: `reset(seed)` returns the first user
message (instructions, task and first observation in one text), `step(action_text)` plays one
assistant reply and returns the next observation. The same strings are what the expert demos
hold and what the evaluator shows a model, so a policy trained on the demos sees at evaluation
exactly the format it learnt.
"""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol, runtime_checkable

from atlas_hf.errors import EnvironmentNotFoundError, InvalidInputError


@dataclass
class StepResult:
    """What one `TextEnv.step` returns.

    Attributes:
        observation (`str`): The next user message: what the action did and what is seen now.
        reward (`float`): The environment's reward for this step (BabyAI: > 0 only on success).
        done (`bool`): Whether the episode is over (success, failure or the environment's own time limit).
        info (`dict`): `success` (bool), `invalid_action` (bool: unparsable or naming nothing that can be
            done now), `score` (float in [0, 1]: the progress so far, where the environment measures
            it; else success), and environment-specific details.
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


SPLIT_STRIDE = 1_000_000
"""Environment seeds `[0, 1M)` play an environment's training games, `[1M, 2M)` its test games and
`[2M, 3M)` its dev games, in environments that have splits (ScienceWorld, TextWorldExpress)."""
SPLITS = ("train", "test", "dev")


def split_of_seed(seed: int) -> tuple[str, int]:
    """The split an environment seed plays and its index there: `(split, seed % SPLIT_STRIDE)`.

    Raises:
        `InvalidInputError`: A negative seed, or one past the dev split.
    """
    if seed < 0 or seed >= SPLIT_STRIDE * len(SPLITS):
        raise InvalidInputError(
            f"Seed {seed} names no split: use [0, 1M) for training games, [1M, 2M) for test and [2M, 3M) for dev."
        )
    return SPLITS[seed // SPLIT_STRIDE], seed % SPLIT_STRIDE


_ACTION_LINE = re.compile(r"^\s*action\s*:\s*(.*)$", re.IGNORECASE | re.MULTILINE)


def action_line(text: str) -> str:
    """The action of a reply: the text after its last `Action:` (else its last line), stripped of
    surrounding quotes and full stops; case kept."""
    found = _ACTION_LINE.findall(text or "")
    lines = (text or "").strip().splitlines()
    line = found[-1] if found else (lines[-1] if lines else "")
    return re.sub(r"\s+", " ", line.strip().strip(".!\"'`").strip())


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
        name (`str`): A name from `list_envs()`, e.g. `"babyai/GoToLocal"`, optionally with constructor
            arguments after a colon, `"twx/cookingworld:numLocations=2,step_limit=50"` (integers,
            floats and true/false are read as such), so an evaluation's environment names say it all.
        **kwargs: Passed to the environment's constructor (over the ones in `name`).

    Returns:
        `TextEnv`: A fresh environment; call `reset(seed)` before `step`.

    Raises:
        `EnvironmentNotFoundError`: `name` is not registered (the message lists the names that are).
        `ImportError`: The environment's optional dependency is missing (the message says what to install).
    """
    name, _, arguments = name.partition(":")
    if arguments:
        kwargs = {**_read_arguments(name, arguments), **kwargs}
    if name not in _REGISTRY:
        known = ", ".join(sorted(_REGISTRY)) or "none"
        raise EnvironmentNotFoundError(f"Unknown environment {name!r}. Registered environments: {known}.")
    _, factory = _REGISTRY[name]
    if isinstance(factory, str):
        module, _, attribute = factory.partition(":")
        factory = getattr(importlib.import_module(module), attribute)
    return factory(**kwargs)


def _read_arguments(name: str, arguments: str) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for item in arguments.split(","):
        key, sep, text = (part.strip() for part in item.partition("="))
        if not sep or not key.isidentifier():
            raise InvalidInputError(
                f"{name}:{arguments}: {item!r} is not `key=value`; write `{name}:key=value,key=value`."
            )
        lowered = text.lower()
        if lowered in ("true", "false"):
            values[key] = lowered == "true"
            continue
        for kind in (int, float):
            try:
                values[key] = kind(text)
                break
            except ValueError:
                continue
        else:
            values[key] = text
    return values
