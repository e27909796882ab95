"""ScienceWorld (`scienceworld/<task>`): 30 elementary-science tasks in a simulated house and garden.

The agent reads what the room holds and answers with a thought and one command in the
simulator's words (`open door to kitchen`, `go to kitchen`, `pick up thermometer`,
`focus on unknown substance B`, `move metal pot to stove`, `activate stove`, `wait1`):

    Thought: The water must boil; the stove heats the pot.
    Action: activate stove

When a command could mean several objects the simulator lists them, numbered, and the next
reply picks one by its number. Lists of things are shown sorted (`canonical`), so a seed always shows
the same text. A command it cannot parse ("No known action matches that input")
counts as invalid. The progress score is the task's own score / 100 (partial credit for each
sub-goal), negative scores (a failed task) counted as 0; success is a score of 100.

Seeds (see `atlas_hf.evaluation.envs`): seed `i` plays the task's `i`-th training variation, `1_000_000 + i`
its `i`-th test variation and `2_000_000 + i` its `i`-th dev variation (ScienceWorld's own splits,
disjoint by construction).

Requires `pip install 'atlas-hf[envs]'` (`scienceworld`) and a Java runtime.
"""

from __future__ import annotations

from typing import Any

from atlas_hf.evaluation.envs.base import StepResult, action_line, split_of_seed
from atlas_hf.evaluation.envs.jvm import gateway
from atlas_hf.errors import InvalidInputError

TASKS: dict[str, str] = {
    "boil": "boil a substance",
    "melt": "melt a substance",
    "freeze": "freeze a substance",
    "change-the-state-of-matter-of": "change the state of matter of a substance",
    "use-thermometer": "measure a substance's temperature and sort it",
    "measure-melting-point-known-substance": "measure the melting point of a known substance",
    "measure-melting-point-unknown-substance": "measure the melting point of an unknown substance",
    "power-component": "build a circuit that powers a component",
    "power-component-renewable-vs-nonrenewable-energy": "power a component from a renewable source",
    "test-conductivity": "test whether an object conducts electricity",
    "test-conductivity-of-unknown-substances": "test the conductivity of an unknown substance",
    "find-living-thing": "find a living thing and move it",
    "find-non-living-thing": "find a non-living thing",
    "find-plant": "find a plant and move it",
    "find-animal": "find an animal and move it",
    "grow-plant": "grow a plant from a seed",
    "grow-fruit": "grow a fruit by pollination",
    "chemistry-mix": "mix chemicals into a new substance",
    "chemistry-mix-paint-secondary-color": "mix a secondary paint colour",
    "chemistry-mix-paint-tertiary-color": "mix a tertiary paint colour",
    "lifespan-longest-lived": "find the longest-lived animal",
    "lifespan-shortest-lived": "find the shortest-lived animal",
    "lifespan-longest-lived-then-shortest-lived": "find the longest- then the shortest-lived animal",
    "identify-life-stages-1": "order the life stages of a plant",
    "identify-life-stages-2": "order an animal's life stages",
    "inclined-plane-determine-angle": "find the steeper inclined plane",
    "inclined-plane-friction-named-surfaces": "compare the friction of named surfaces",
    "inclined-plane-friction-unnamed-surfaces": "compare the friction of unnamed surfaces",
    "mendelian-genetics-known-plant": "predict a known plant's inherited trait",
    "mendelian-genetics-unknown-plant": "predict an unknown plant's inherited trait",
}
"""The tasks registered as `scienceworld/<task>`, with a one-line description."""

INSTRUCTIONS = (
    "You act in a simulated house and garden to do a science task. Task: {task}\n"
    "Commands: look around, look at <thing>, go to <room>, open/close <thing>, pick up <thing>, "
    "put down <thing>, move <thing> to <container>, pour <thing> into <container>, focus on <thing>, "
    "activate/deactivate <device>, use <device> on <thing>, connect <terminal> to <terminal>, "
    "mix <container>, read <thing>, wait, wait1, inventory; when asked which one you meant, reply with its number. "
    "`check valid actions` lists the command patterns.\n"
    "Reply with a short thought and one action: Thought: ... Action: ...\n\n"
)
CHECK_ACTIONS = "check valid actions"
UNPARSED = "No known action matches that input."
_FOLDS = {"train": "getVariationsTrain", "test": "getVariationsTest", "dev": "getVariationsDev"}


def _jar() -> tuple[str, str]:
    try:
        from scienceworld.constants import BASEPATH, JAR_PATH
    except ImportError as error:
        raise ImportError(
            "The scienceworld/* environments need ScienceWorld: `pip install 'atlas-hf[envs]'` "
            "(or `pip install scienceworld`), and a Java runtime."
        ) from error
    return JAR_PATH, BASEPATH


def canonical(observation: str) -> str:
    """The observation with every list of things sorted: the simulator lists the contents of a room,
    a surface or a container in an order that changes from one load to the next (the art studio's
    paint cups), and a seed must always show the same text.

    Sorted are each run of tab-indented lines (deeper-indented lines stay with the line above), each
    `... is: a, b, c.` list and each `(containing a, b)` list, inner lists first."""
    lines, out, run = observation.split("\n"), [], []
    for line in lines + [""]:
        if line.startswith("\t\t") and run:
            run[-1] += "\n" + line
        elif line.startswith("\t"):
            run.append(_sorted_line(line))
        else:
            out += sorted(run)
            run = []
            out.append(_sorted_line(line))
    return "\n".join(out[:-1])


def _items(text: str) -> list[str]:
    """`text` cut at its top-level `, ` (outside parentheses), each part's own lists sorted; `, which ...`
    stays with the thing it describes."""
    items, depth, begin, i = [], 0, 0, 0
    while i < len(text):
        char = text[i]
        depth += (char == "(") - (char == ")")
        if depth == 0 and text.startswith(", ", i) and not text.startswith(", which ", i):
            items.append(text[begin:i])
            begin = i + 2
        i += 1
    return [_sorted_parentheses(item) for item in items + [text[begin:]]]


def _sorted_parentheses(text: str) -> str:
    """`text` with the list inside each top-level `(containing ...)` sorted."""
    out, i = [], 0
    while (start := text.find("(containing ", i)) >= 0:
        depth, end = 0, start
        for end in range(start, len(text)):
            depth += (text[end] == "(") - (text[end] == ")")
            if depth == 0:
                break
        if depth:  # unbalanced: leave the rest as it is
            break
        inner = text[start + len("(containing ") : end]
        out += [text[i:start], "(containing ", ", ".join(sorted(_items(inner))), ")"]
        i = end + 1
    return "".join(out) + text[i:]


def _sorted_line(line: str) -> str:
    head, sep, tail = line.partition(" is: ")
    if sep and tail.endswith(".") and "(" not in head:
        return head + sep + ", ".join(sorted(_items(tail[:-1]))) + "."
    return _sorted_parentheses(line)


class ScienceWorldEnv:
    """A ScienceWorld task played in text (see the module docstring).

    Args:
        task (`str`): A key of `TASKS`, e.g. `"boil"`.
        step_limit (`int`): Commands after which an unfinished episode ends as a failure (the
            simulator's own default, 100).
        simplifications (`str`): ScienceWorld's simplifications, comma-separated (`"easy"`,
            `"teleportAction,openDoors"`); none by default.

    Raises:
        `InvalidInputError`: An unknown task.
        `JavaNotFoundError`: No Java runtime.
    """

    def __init__(self, task: str = "find-living-thing", step_limit: int = 100, simplifications: str = "") -> None:
        if task not in TASKS:
            raise InvalidInputError(f"Unknown ScienceWorld task {task!r}; the tasks are {', '.join(TASKS)}.")
        self.task_name, self.step_limit, self.simplifications = task, int(step_limit), simplifications
        extras = ",".join(
            f"{k}={v}"
            for k, v in (("step_limit", step_limit), ("simplifications", simplifications))
            if (k, v) not in (("step_limit", 100), ("simplifications", ""))
        )
        self.name = f"scienceworld/{task}" + (f":{extras}" if extras else "")
        jar, cwd = _jar()
        self._server = gateway(jar, cwd).jvm.scienceworld.runtime.pythonapi.PythonInterface()
        self._variations: dict[str, list[int]] = {}
        self._gold: list[str] = []
        self.task, self.steps, self.score, self._done = "", 0, 0.0, True

    def variation(self, seed: int) -> tuple[str, int]:
        """The (split, ScienceWorld variation) that environment seed `seed` plays."""
        split, index = split_of_seed(seed)
        if split not in self._variations:
            if not self._variations:
                self._server.load(self.task_name, 0, self.simplifications, False)
            self._variations[split] = list(getattr(self._server, _FOLDS[split])())
        variations = self._variations[split]
        if index >= len(variations):
            raise InvalidInputError(
                f"{self.name}: seed {seed} is variation {index} of the {split} split, which "
                f"has {len(variations)}; use fewer episodes."
            )
        return split, variations[index]

    def reset(self, seed: int, gold_path: bool = False) -> str:
        """Start the variation of environment seed `seed`; return the first user message.

        Args:
            seed (`int`): The environment seed.
            gold_path (`bool`): Also generate the task's gold commands (`gold_actions()`).

        Returns:
            `str`: The instructions, the task and the first observation.
        """
        _, variation = self.variation(seed)
        self._server.load(self.task_name, variation, self.simplifications, gold_path)
        self._gold = list(self._server.getGoldActionSequence()) if gold_path else []
        self._server.reset()
        self.task = str(self._server.getTaskDescription())
        observation = canonical(str(self._server.step("look around")))
        self.steps, self.score, self._done = 0, 0.0, False
        return INSTRUCTIONS.format(task=self.task) + observation.strip()

    def gold_actions(self) -> list[str]:
        """The task's gold commands (after `reset(seed, gold_path=True)`)."""
        return list(self._gold)

    def valid_actions(self) -> list[str]:
        """The command patterns the simulator knows (`OBJ` stands for a thing in view)."""
        return sorted(str(a) for a in self._server.getPossibleActions())

    def step(self, action_text: str) -> StepResult:
        """Play one reply; an unparsable command is counted as invalid (never an exception)."""
        if self._done:
            raise InvalidInputError(f"{self.name}: the episode is over; call reset(seed) first.")
        action = " ".join(action_line(action_text).split())
        if action.lower() == CHECK_ACTIONS:
            return StepResult(
                "Valid actions: " + ", ".join(self.valid_actions()) + ".",
                0.0,
                False,
                {"success": False, "invalid_action": False, "action": action, "score": self.score},
            )
        observation = canonical(str(self._server.step(action))).strip()
        self.steps += 1
        raw = float(self._server.getScore())
        success = raw >= 1.0
        done = success or raw < 0 or bool(self._server.getCompleted()) or self.steps >= self.step_limit
        self._done = done
        score, self.score = self.score, max(raw, 0.0)
        info: dict[str, Any] = {
            "success": success,
            "invalid_action": observation.startswith(UNPARSED),
            "action": action,
            "score": self.score,
        }
        return StepResult(observation or "Nothing happens.", self.score - score, done, info)
