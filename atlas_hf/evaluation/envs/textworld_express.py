"""TextWorldExpress (`twx/<game>`): CookingWorld, TextWorld-Commonsense and six more text games.

The agent reads the room description and answers with a thought and one command, as the game
words it (`take knife`, `open fridge`, `move east`, `put red apple in fridge`, `chop carrot`):

    Thought: The recipe needs a sliced carrot; the knife is on the counter.
    Action: take knife

`check valid actions` lists the commands the game accepts now (a free action). A command the
game does not accept gets "Unknown action" back and counts as invalid. The progress score is the
game's own normalised score in [0, 1]; success is the game's task success.

Seeds (see `atlas_hf.evaluation.envs`): seed `i` plays the `i`-th generator seed of the game's train fold,
`1_000_000 + i` its test fold and `2_000_000 + i` its dev fold; the folds' generator seeds are
disjoint (0-9999, 20000-, 10000-), so no training seed ever plays an evaluation game.

Requires `pip install 'atlas-hf[envs]'` (`textworld-express`) and a Java runtime.
"""

from __future__ import annotations

import json
from typing import Any

from atlas_hf.evaluation.envs.base import StepResult, action_line, split_of_seed
from atlas_hf.evaluation.envs.jvm import gateway
from atlas_hf.errors import InvalidInputError

GAMES: dict[str, tuple[str, dict[str, int]]] = {
    "cookingworld": (
        "cook a meal from the cookbook's recipe and eat it",
        {"numLocations": 1, "numIngredients": 2, "numDistractorItems": 5, "includeDoors": 0, "limitInventorySize": 0},
    ),
    "twc": (
        "put things away where they belong (TextWorld-Commonsense)",
        {"numLocations": 1, "numItemsToPutAway": 2, "includeDoors": 0, "limitInventorySize": 0},
    ),
    "coin": (
        "find the coin and take it",
        {"numLocations": 5, "numDistractorItems": 0, "includeDoors": 0, "limitInventorySize": 0},
    ),
    "mapreader": (
        "read the map, fetch the coin and bring it back",
        {
            "numLocations": 8,
            "maxDistanceApart": 4,
            "maxDistractorItemsPerLocation": 2,
            "includeDoors": 0,
            "limitInventorySize": 0,
        },
    ),
    "arithmetic": ("do the sum on the paper and put away the right item", {}),
    "sorting": ("put the items in the box in order of size", {}),
    "simonsays": ("do exactly what Simon says", {}),
    "peckingorder": ("read the recipe's steps and follow their order", {}),
}
"""The games registered as `twx/<game>`: description and default generator parameters (TWX's names)."""

INSTRUCTIONS = (
    "You play a text game. Task: {task}\n"
    "Act with short commands as the game words them: look around, inventory, take <item>, "
    "put <item> in <container>, open <thing>, move <direction>, read <item>, and the task's own verbs; "
    "`check valid actions` lists what you can do now.\n"
    "Reply with a short thought and one action: Thought: ... Action: ...\n\n"
)
CHECK_ACTIONS = "check valid actions"
_FOLDS = {"train": "getSeedsTrain", "test": "getSeedsTest", "dev": "getSeedsDev"}


def _jar() -> tuple[str, str]:
    try:
        from textworld_express.constants import BASEPATH, JAR_PATH
    except ImportError as error:
        raise ImportError(
            "The twx/* environments need TextWorldExpress: `pip install 'atlas-hf[envs]'` "
            "(or `pip install textworld-express`), and a Java runtime."
        ) from error
    return JAR_PATH, BASEPATH


class TextWorldExpressEnv:
    """A TextWorldExpress game played in text (see the module docstring).

    Args:
        game (`str`): A key of `GAMES`, e.g. `"cookingworld"`.
        step_limit (`int`): Commands after which an unfinished episode ends as a failure.
        **params: Generator parameters in TWX's names (`numLocations=2`, `includeDoors=1`), over the
            game's defaults in `GAMES`.

    Raises:
        `InvalidInputError`: An unknown game, or parameters the game rejects.
        `JavaNotFoundError`: No Java runtime.
    """

    def __init__(self, game: str = "cookingworld", step_limit: int = 100, **params: Any) -> None:
        if game not in GAMES:
            raise InvalidInputError(f"Unknown TextWorldExpress game {game!r}; the games are {', '.join(GAMES)}.")
        self.game, self.step_limit = game, int(step_limit)
        self.params = {**GAMES[game][1], **params}
        suffix = ",".join(f"{k}={v}" for k, v in params.items())
        self.name = f"twx/{game}" + (f":{suffix}" if suffix else "")
        jar, cwd = _jar()
        self._server = gateway(jar, cwd).jvm.textworldexpress.runtime.PythonInterface()
        message = self._server.load(game, ",".join(f"{k}={int(v)}" for k, v in self.params.items()))
        if message:
            raise InvalidInputError(f"twx/{game} refused its parameters {self.params}: {message}")
        self._seeds: dict[str, list[int]] = {}
        self._state: dict[str, Any] = {}
        self._gold: list[str] = []
        self.task, self.steps, self._done = "", 0, True

    def generator_seed(self, seed: int) -> tuple[str, int]:
        """The (fold, TWX generator seed) that environment seed `seed` plays."""
        fold, index = split_of_seed(seed)
        if fold not in self._seeds:
            self._seeds[fold] = list(getattr(self._server, _FOLDS[fold])())
        seeds = self._seeds[fold]
        if index >= len(seeds):
            raise InvalidInputError(
                f"{self.name}: seed {seed} is game {index} of the {fold} fold, which has "
                f"{len(seeds)}; use fewer episodes."
            )
        return fold, seeds[index]

    def reset(self, seed: int, gold_path: bool = False) -> str:
        """Start the game of environment seed `seed`; return the first user message.

        Args:
            seed (`int`): The environment seed.
            gold_path (`bool`): Also generate the game's gold commands (`gold_actions()`).

        Returns:
            `str`: The instructions, the task and the first observation.
        """
        fold, generator_seed = self.generator_seed(seed)
        self._state = json.loads(self._server.generateNewGameJSON(generator_seed, fold, gold_path))
        self._gold = list(self._server.getGoldActionSequence()) if gold_path else []
        self.task = str(self._server.getTaskDescription())
        self.steps, self._done = 0, False
        return INSTRUCTIONS.format(task=self.task) + self._state["observation"].strip()

    def gold_actions(self) -> list[str]:
        """The game's gold commands (after `reset(seed, gold_path=True)`), its opening `look around` dropped."""
        return [a for a in self._gold[1:]] if self._gold[:1] == ["look around"] else list(self._gold)

    def valid_actions(self) -> list[str]:
        """The commands the game accepts now."""
        return sorted(self._state.get("validActions", []))

    def step(self, action_text: str) -> StepResult:
        """Play one reply; a command the game does not accept is counted as invalid (never an exception)."""
        if self._done:
            raise InvalidInputError(f"{self.name}: the episode is over; call reset(seed) first.")
        action = " ".join(action_line(action_text).split())
        valid = {a.lower(): a for a in self._state.get("validActions", [])}
        action = valid.get(action.lower(), action)  # the game's own spelling ("T-shirt"), whatever the case typed
        score = float(self._state.get("score", 0.0))
        if action.lower() == CHECK_ACTIONS:
            return StepResult(
                "Valid actions: " + ", ".join(self.valid_actions()) + ".",
                0.0,
                False,
                {"success": False, "invalid_action": False, "action": action, "score": _clip(score)},
            )
        invalid = action.lower() not in valid
        self._state = json.loads(self._server.stepJSON(action))
        self.steps += 1
        new_score = float(self._state.get("score", 0.0))
        success = bool(self._state.get("tasksuccess"))
        done = success or bool(self._state.get("taskfailure")) or self.steps >= self.step_limit
        self._done = done
        observation = self._state["observation"].strip() or "Nothing happens."
        return StepResult(
            observation,
            new_score - score,
            done,
            {"success": success, "invalid_action": invalid, "action": action, "score": _clip(new_score)},
        )


def _clip(score: float) -> float:
    return min(max(score, 0.0), 1.0)
