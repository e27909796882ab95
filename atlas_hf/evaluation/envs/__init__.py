"""Text environments to evaluate agents in, and expert demos to train them on.

    >>> from atlas_hf.evaluation.envs import make_env, list_envs, expert_trajectories
    >>> env = make_env("babyai/GoToLocal")
    >>> first_message = env.reset(seed=0)
    >>> result = env.step("Thought: ...\\nAction: turn left")

Families (each `<family>/<game>`, with constructor arguments after a colon:
`"twx/cookingworld:numLocations=2"`):
- `babyai/<level>`: BabyAI grid worlds (`minigrid`), 1 to a few dozen steps, success only;
- `scienceworld/<task>`: ScienceWorld's 30 science tasks, 10 to 100+ steps, partial credit;
- `twx/<game>`: TextWorldExpress (CookingWorld, TextWorld-Commonsense, Coin, MapReader, ...).

Seeds: episode `i` of a run that starts at `seed` plays environment seed `seed + i`, in
`expert_trajectories` and in `atlas_hf.evaluate_agent` alike, so a demo can be replayed. BabyAI
seeds are generator seeds (keep training and evaluation ranges apart, as the recipe does with
`--eval-seed 1000000`). ScienceWorld and TextWorldExpress have splits, and the seed names one
(`split_of_seed`): `[0, 1M)` the training games, `[1M, 2M)` the test games, `[2M, 3M)` the dev
games, so a training seed never plays an evaluation game.

Every step's `info` has `success`, `invalid_action` and `score` (progress in [0, 1]).
BabyAI needs the extra `atlas-hf[envs]`; ScienceWorld and TextWorldExpress need it and a Java
runtime (`java` on PATH); each runs one JVM per process, shared by all its environments.
"""

from __future__ import annotations

from typing import Any, Callable

from atlas_hf.evaluation.envs.base import (
    SPLIT_STRIDE,
    StepResult,
    TextEnv,
    list_envs,
    make_env,
    register_env,
    split_of_seed,
)
from atlas_hf.errors import InvalidInputError
from atlas_hf.trajectories.schema import MESSAGES

__all__ = [
    "SPLIT_STRIDE",
    "StepResult",
    "TextEnv",
    "expert_trajectories",
    "list_envs",
    "make_env",
    "register_env",
    "split_of_seed",
]


def _factory(module: str, cls: str, first: str) -> Callable[..., TextEnv]:
    def build(**kwargs: Any) -> TextEnv:
        import importlib

        return getattr(importlib.import_module(module), cls)(first, **kwargs)

    return build


def _register_builtin() -> None:
    from atlas_hf.evaluation.envs.babyai import LEVELS
    from atlas_hf.evaluation.envs.scienceworld import TASKS
    from atlas_hf.evaluation.envs.textworld_express import GAMES

    for level, description in LEVELS.items():
        register_env(
            f"babyai/{level}",
            _factory("atlas_hf.evaluation.envs.babyai", "BabyAITextEnv", level),
            f"BabyAI: {description}",
        )
    for task, description in TASKS.items():
        register_env(
            f"scienceworld/{task}",
            _factory("atlas_hf.evaluation.envs.scienceworld", "ScienceWorldEnv", task),
            f"ScienceWorld: {description}",
        )
    for game, (description, _) in GAMES.items():
        register_env(
            f"twx/{game}",
            _factory("atlas_hf.evaluation.envs.textworld_express", "TextWorldExpressEnv", game),
            f"TextWorldExpress: {description}",
        )


_register_builtin()

_EXPERT_FAMILIES = ("babyai", "scienceworld", "twx")


def expert_trajectories(env_name: str, episodes: int, seed: int = 0, max_turns: int | None = None) -> Any:
    """Successful expert demos of an environment, as chat rows ready for annotation and training.

    Episode `i` plays environment seed `seed + i`; only the episodes the expert solves within
    `max_turns` (and the environment's own step limit) are kept, so `len(result) / episodes` is the
    expert's success rate on those seeds. BabyAI's expert is minigrid's `BabyAIBot`; ScienceWorld's
    and TextWorldExpress's are the simulators' gold paths (`atlas_hf.evaluation.envs.gold_expert`).

    Args:
        env_name (`str`): A name from `list_envs()`, with arguments if any (`"twx/cookingworld:numLocations=2"`).
        episodes (`int`): How many seeds to play.
        seed (`int`): The first environment seed.
        max_turns (`int`, *optional*): The turn budget of an expert episode (64 for BabyAI, 100 otherwise).

    Returns:
        `datasets.Dataset`: Columns `messages` (user observations and assistant "Thought: ... Action: ..."
        replies, the format the evaluator shows a model), `env`, `seed`, `success`, `reward`,
        `score` (progress in [0, 1]), `turns`.

    Raises:
        `EnvironmentNotFoundError`: `env_name` is not registered.
        `InvalidInputError`: The environment has no expert, or `episodes` is not positive.
    """
    from datasets import Dataset, Features, Value

    env = make_env(env_name)  # unknown names fail here, with the registered ones listed
    family, _, level = env_name.partition(":")[0].partition("/")
    if family not in _EXPERT_FAMILIES:
        raise InvalidInputError(
            f"No expert is known for {env_name!r}; experts exist for the "
            f"{', '.join(f + '/*' for f in _EXPERT_FAMILIES)} environments."
        )
    if episodes <= 0:
        raise InvalidInputError(f"episodes must be positive, got {episodes!r}.")
    if family == "babyai":
        from atlas_hf.evaluation.envs.babyai_expert import expert_episode

        rows = [expert_episode(level, seed + i, max_turns=max_turns or 64) for i in range(episodes)]
    else:
        from atlas_hf.evaluation.envs.gold_expert import gold_episode

        rows = [gold_episode(env, seed + i, max_turns=max_turns or 100) for i in range(episodes)]
    message = {"role": Value("string"), "content": Value("string")}
    features = Features(
        {
            MESSAGES: [message],
            "env": Value("string"),
            "seed": Value("int64"),
            "success": Value("bool"),
            "reward": Value("float64"),
            "score": Value("float64"),
            "turns": Value("int64"),
        }
    )
    solved = [row for row in rows if row["success"]]
    return Dataset.from_dict({name: [row[name] for row in solved] for name in features}, features=features)
