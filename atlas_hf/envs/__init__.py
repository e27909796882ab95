"""Text environments to evaluate agents in, and expert demos to train them on.

    >>> from atlas_hf.envs import make_env, list_envs, expert_trajectories
    >>> env = make_env("babyai/GoToLocal")
    >>> first_message = env.reset(seed=0)
    >>> result = env.step("Thought: ...\\nAction: turn left")

Seeds: episode `i` of a run that starts at `seed` plays environment seed `seed + i`, in
`expert_trajectories` and in `atlas_hf.evaluate_agent` alike, so a demo can be replayed and
training and evaluation seeds can be kept apart.

BabyAI (`babyai/<level>`) needs the optional extra `atlas-hf[envs]` (`minigrid`).
"""

from __future__ import annotations

from typing import Any

from atlas_hf.envs.base import StepResult, TextEnv, list_envs, make_env, register_env
from atlas_hf.errors import InvalidInputError
from atlas_hf.schema import MESSAGES

__all__ = ["StepResult", "TextEnv", "expert_trajectories", "list_envs", "make_env", "register_env"]


def _register_babyai() -> None:
    from atlas_hf.envs.babyai import LEVELS

    for level, description in LEVELS.items():
        register_env(f"babyai/{level}", _babyai_factory(level), f"BabyAI: {description}")


def _babyai_factory(level: str) -> Any:
    def build(**kwargs: Any) -> TextEnv:
        from atlas_hf.envs.babyai import BabyAITextEnv

        return BabyAITextEnv(level, **kwargs)

    return build


_register_babyai()


def expert_trajectories(env_name: str, episodes: int, seed: int = 0, max_turns: int = 64) -> Any:
    """Successful expert demos of an environment, as chat rows ready for annotation and training.

    Episode `i` plays environment seed `seed + i`; only the episodes the expert solves are kept, so
    `len(result) / episodes` is the expert's success rate on those seeds.

    Args:
        env_name (`str`): A name from `list_envs()` that has an expert (the `babyai/*` levels: `BabyAIBot`).
        episodes (`int`): How many seeds to play.
        seed (`int`): The first environment seed.
        max_turns (`int`): The turn budget of an expert episode.

    Returns:
        `datasets.Dataset`: Columns `messages` (user observations and assistant "Thought: ... Action: ..."
        replies, the format the evaluator shows a model), `env`, `seed`, `success`, `reward`, `turns`.

    Raises:
        `EnvironmentNotFoundError`: `env_name` is not registered.
        `ValueError`: The environment has no expert, or `episodes` is not positive.
    """
    from datasets import Dataset, Features, Value

    make_env(env_name)  # unknown names fail here, with the registered ones listed
    family, _, level = env_name.partition("/")
    if family != "babyai":
        raise InvalidInputError(f"No expert is known for {env_name!r}; experts exist for the babyai/* environments.")
    if episodes <= 0:
        raise InvalidInputError(f"episodes must be positive, got {episodes!r}.")
    from atlas_hf.envs.babyai_expert import expert_episode

    rows = [expert_episode(level, seed + i, max_turns=max_turns) for i in range(episodes)]
    message = {"role": Value("string"), "content": Value("string")}
    features = Features({MESSAGES: [message], "env": Value("string"), "seed": Value("int64"),
                         "success": Value("bool"), "reward": Value("float64"), "turns": Value("int64")})
    solved = [row for row in rows if row["success"]]
    return Dataset.from_dict({name: [row[name] for row in solved] for name in features}, features=features)
