"""BabyAI (through `minigrid`) as a text environment (its expert writes demos in `babyai_expert`).

The agent reads what is in its field of view (objects with ids and positions, the wall or door
ahead, what it carries) and answers with a short thought and one high-level action:

    Thought: I can see the red ball 1; I will go to it.
    Action: go to red ball 1

High-level actions (`go to`, `pickup`, `go through`, `toggle and go through`) are expanded into
primitive moves by a shortest-path search over the cells the agent has seen so far in the episode
(never the hidden map). Object ids number the objects of each colour and type in the order the
agent first sees them. Success is the level's own reward (> 0 only when the mission is done).

Requires the optional extra `atlas-hf[envs]` (`pip install minigrid`).
"""

from __future__ import annotations

import contextlib
import io
import re
from collections import deque
from typing import Any, Callable

from atlas_hf.evaluation.envs.base import StepResult, action_line
from atlas_hf.errors import InvalidInputError

LEVELS: dict[str, str] = {
    # levels of one room (the agent sees most of it): the held-in and held-out levels of the recipe
    "GoToLocal": "go to an object among distractors, in one room",
    "PickupLoc": "pick up an object described by its location, in one room",
    "PutNextLocal": "put an object next to another, in one room",
    "GoToObj": "go to the only object of a small room",
    "GoToRedBallGrey": "go to the red ball among grey distractors",
    "GoToRedBall": "go to the red ball among distractors of any colour",
    "GoToRedBlueBall": "go to the red or the blue ball",
    "GoToDoor": "go to a door of a room",
    "GoToObjDoor": "go to an object or a door of a room",
    "OpenDoor": "open a door of a room described by colour or location",
    "OpenDoorColor": "open the door of a given colour",
    "OpenDoorLoc": "open the door at a given location",
    "PickupDist": "pick up an object among distractors, in one room",
    "UnlockLocal": "find the key and unlock a door of the room",
    "OpenTwoDoors": "open two doors in order",
    "GoTo": "go to an object anywhere in a 3x3 maze of rooms",
}
"""The BabyAI levels registered as `babyai/<level>` (minigrid's `BabyAI-<level>-v0`)."""

ACTION_HELP = (
    "turn left, turn right, move forward, go to <object> <id>, pickup <object> <id>, go through <door> <id>, "
    "toggle and go through <door> <id>, toggle, drop, check available actions"
)
INSTRUCTIONS = (
    "You act in a grid world. Mission: {mission}.\n"
    f"Actions: {ACTION_HELP}.\n"
    "Reply with a short thought and one action: Thought: ... Action: ...\n\n"
)

PRIMITIVE_ACTIONS = {"left": 0, "right": 1, "forward": 2, "pickup": 3, "drop": 4, "toggle": 5, "done": 6}
"""minigrid's primitive moves by name."""
OBJECT_TYPES = ("ball", "box", "key", "door")
"""The kinds of object the agent is told about (and may name in an action)."""
_NAMED = re.compile(
    r"^(go to|goto|pick ?up|go through|toggle and go through)\s+(?:the\s+)?([a-z]+)\s+([a-z]+)\s+(\d+)$"
)


def parse_action(text: str) -> str:
    """The action in a reply: the text after the last `Action:` (else the last line), lower-cased."""
    return action_line(text).lower()


def _require_minigrid() -> Any:
    try:
        import gymnasium
        import minigrid  # noqa: F401  (registers the BabyAI levels with gymnasium)
    except ImportError as error:  # pragma: no cover - exercised only without the extra
        raise ImportError(
            "The BabyAI environments need `minigrid`: install the extra with `pip install 'atlas-hf[envs]'` "
            "(or `pip install minigrid`)."
        ) from error
    return gymnasium


class BabyAITextEnv:
    """A BabyAI level played in text (see the module docstring for the format).

    Args:
        level (`str`): A BabyAI level name without prefix or version, e.g. `"GoToLocal"`.
        max_steps (`int`, *optional*): The level's limit on primitive moves (minigrid's default if unset).

    Attributes:
        gym_env: minigrid's environment (wrapped), `env` its unwrapped grid world.
        visible (`dict[str, Any]`): The objects in view at the last observation, by their names.
        primitive_observers (`list[Callable[[int], None]]`): Called with every primitive move made
            (the expert keeps its plan in step through it).
    """

    def __init__(self, level: str = "GoToLocal", max_steps: int | None = None) -> None:
        gymnasium = _require_minigrid()
        self.name = f"babyai/{level}"
        self.level = level
        kwargs = {"max_steps": max_steps} if max_steps else {}
        self.gym_env = gymnasium.make(f"BabyAI-{level}-v0", **kwargs)
        self.env: Any = self.gym_env.unwrapped
        self.primitive_observers: list[Callable[[int], None]] = []
        self._ids: dict[int, str] = {}
        self._counts: dict[tuple[str, str], int] = {}
        self._seen: set[tuple[int, int]] = set()
        self.visible: dict[str, Any] = {}
        self._done = False
        self.mission = ""

    # ----------------------------------------------------------------- episode
    def reset(self, seed: int) -> str:
        """Start the episode of environment seed `seed`; return the first user message."""
        with contextlib.redirect_stdout(io.StringIO()):  # minigrid prints its rejected level samples
            self.gym_env.reset(seed=int(seed))
        self._ids, self._counts, self._seen, self._done = {}, {}, set(), False
        self.mission = self.env.mission
        return INSTRUCTIONS.format(mission=self.mission) + self.describe()

    def step(self, action_text: str) -> StepResult:
        """Play one reply; bad or impossible actions get an observation saying so (never an exception)."""
        if self._done:
            raise InvalidInputError(f"{self.name}: the episode is over; call reset(seed) first.")
        action = parse_action(action_text)
        reward, done, invalid, feedback = self._act(action)
        self._done = done
        success = done and reward > 0
        observation = feedback if done else f"{feedback}\n{self.describe()}"
        return StepResult(
            observation,
            reward,
            done,
            {"success": success, "invalid_action": invalid, "action": action, "score": float(success)},
        )

    # ----------------------------------------------------------------- what the agent sees
    def object_name(self, obj: Any) -> str:
        """The object's name in this episode, e.g. `red ball 1` (numbered in the order first seen)."""
        key = id(obj)
        if key not in self._ids:
            kind = (obj.color, obj.type)
            self._counts[kind] = self._counts.get(kind, 0) + 1
            self._ids[key] = f"{obj.color} {obj.type} {self._counts[kind]}"
        return self._ids[key]

    def _look(self) -> list[tuple[int, int]]:
        """Mark the cells in view as seen; return them (world coordinates), nearest first."""
        env = self.env
        _, vis_mask = env.gen_obs_grid()
        size = env.agent_view_size
        fwd, right = env.dir_vec, env.right_vec
        top_left = env.agent_pos + fwd * (size - 1) - right * (size // 2)
        cells = []
        for j in range(size):
            for i in range(size):
                if not vis_mask[i, j]:
                    continue
                x, y = (int(v) for v in top_left - fwd * j + right * i)
                if 0 <= x < env.width and 0 <= y < env.height:
                    cells.append((x, y))
        self._seen.update(cells)
        return cells

    def _relative(self, pos: tuple[int, int]) -> tuple[int, int]:
        dx, dy = pos[0] - self.env.agent_pos[0], pos[1] - self.env.agent_pos[1]
        fwd, right = self.env.dir_vec, self.env.right_vec
        return int(dx * fwd[0] + dy * fwd[1]), int(dx * right[0] + dy * right[1])

    def describe(self) -> str:
        """The current observation: objects in view, what is ahead, what is carried."""
        env = self.env
        self.visible = {}
        parts = []
        for pos in sorted(self._look(), key=lambda p: (abs(self._relative(p)[0]) + abs(self._relative(p)[1]), p)):
            obj = env.grid.get(*pos)
            if obj is None or obj.type not in OBJECT_TYPES or pos == tuple(env.agent_pos):
                continue
            name = self.object_name(obj)
            self.visible[name] = obj
            ahead, right = self._relative(pos)
            where = ", ".join(
                text
                for text in (
                    f"{ahead} ahead" if ahead else "",
                    f"{abs(right)} {'right' if right > 0 else 'left'}" if right else "",
                )
                if text
            )
            state = ""
            if obj.type == "door":
                state = ", locked" if obj.is_locked else (", open" if obj.is_open else ", closed")
            parts.append(f"{name} ({where}{state})")
        seen = "You see " + "; ".join(parts) + "." if parts else "You see no objects."
        distance, blocker = 1, None
        while True:
            pos = tuple(int(v) for v in env.agent_pos + env.dir_vec * distance)
            if not (0 <= pos[0] < env.width and 0 <= pos[1] < env.height) or distance >= env.agent_view_size:
                break
            cell = env.grid.get(*pos)
            if cell is not None and not cell.can_overlap():
                blocker = "a wall" if cell.type == "wall" else f"the {self.object_name(cell)}"
                break
            distance += 1
        ahead = (
            f"Ahead: {blocker}, {distance} step{'s' if distance > 1 else ''} away."
            if blocker
            else "Ahead: open space."
        )
        carrying = f"You carry the {self.object_name(env.carrying)}." if env.carrying else "You carry nothing."
        return f"{seen} {ahead} {carrying}"

    def available_actions(self) -> list[str]:
        """The actions that name something in view now (for `check available actions`)."""
        actions = ["turn left", "turn right", "move forward"]
        for name, obj in self.visible.items():
            actions.append(f"go to {name}")
            if obj.type == "door":
                actions += [f"go through {name}", f"toggle and go through {name}"]
            else:
                actions.append(f"pickup {name}")
        actions += ["toggle", "drop", "check available actions"]
        return actions

    # ----------------------------------------------------------------- acting
    def _primitive(self, action: int) -> tuple[float, bool]:
        _, reward, terminated, truncated, _ = self.gym_env.step(action)
        for observer in self.primitive_observers:
            observer(action)
        return float(reward), bool(terminated or truncated)

    def _run(self, actions: list[int]) -> tuple[float, bool]:
        reward, done = 0.0, False
        for action in actions:
            reward, done = self._primitive(action)
            if done:
                break
        return reward, done

    def plan_path(self, target: tuple[int, int]) -> list[int] | None:
        """Primitive moves that end facing `target`, through seen open cells only; None if there are none."""
        env = self.env
        start = (int(env.agent_pos[0]), int(env.agent_pos[1]), int(env.agent_dir))
        vectors = ((1, 0), (0, 1), (-1, 0), (0, -1))  # minigrid's directions 0..3
        queue, parents = deque([start]), {start: None}
        while queue:
            state = queue.popleft()
            x, y, d = state
            if (x + vectors[d][0], y + vectors[d][1]) == tuple(target):
                path = []
                while parents[state] is not None:
                    state, move = parents[state]
                    path.append(move)
                return path[::-1]
            nx, ny = x + vectors[d][0], y + vectors[d][1]
            cell = env.grid.get(nx, ny) if 0 <= nx < env.width and 0 <= ny < env.height else None
            passable = (nx, ny) in self._seen and (cell is None or cell.can_overlap())
            for move, nxt in (
                (PRIMITIVE_ACTIONS["left"], (x, y, (d - 1) % 4)),
                (PRIMITIVE_ACTIONS["right"], (x, y, (d + 1) % 4)),
                (PRIMITIVE_ACTIONS["forward"], (nx, ny, d) if passable else None),
            ):
                if nxt is not None and nxt not in parents:
                    parents[nxt] = (state, move)
                    queue.append(nxt)
        return None

    def _act(self, action: str) -> tuple[float, bool, bool, str]:
        """Play a parsed action: (reward, done, invalid, feedback)."""
        simple = {
            "turn left": "left",
            "turn right": "right",
            "move forward": "forward",
            "go forward": "forward",
            "toggle": "toggle",
            "drop": "drop",
            "pickup": "pickup",
            "pick up": "pickup",
        }
        if action in simple:
            before = (tuple(self.env.agent_pos), self.env.carrying)
            reward, done = self._primitive(PRIMITIVE_ACTIONS[simple[action]])
            moved = before != (tuple(self.env.agent_pos), self.env.carrying)
            if simple[action] == "forward" and not moved:
                return reward, done, False, "You cannot move forward: the way is blocked."
            return reward, done, False, f"You did: {action}."
        if action in ("check available actions", "check actions"):
            return 0.0, False, False, "Available actions: " + ", ".join(self.available_actions()) + "."
        match = _NAMED.match(action)
        if not match:
            shown = action or "(nothing)"
            return 0.0, False, True, f"Invalid action: {shown!r}. Use one of the actions listed in the task."
        verb, name = match.group(1), " ".join(match.group(2, 3, 4))
        obj = self.visible.get(name)
        if obj is None:
            return 0.0, False, True, f"You cannot see {name} now."
        is_door = obj.type == "door"
        if verb.startswith("pick") and is_door or verb.endswith("through") and not is_door:
            return 0.0, False, True, f"You cannot {verb} {name}."
        path = self.plan_path(tuple(obj.cur_pos))
        if path is None:
            return 0.0, False, False, f"You cannot find a way to {name} from here."
        reward, done = self._run(path)
        if done:
            return reward, done, False, f"You went to {name}."
        if verb in ("go to", "goto"):
            return reward, done, False, f"You went to {name}."
        if verb.startswith("pick"):
            if self.env.carrying is not None:
                return reward, done, False, f"You went to {name}, but you already carry something: drop it first."
            reward, done = self._primitive(PRIMITIVE_ACTIONS["pickup"])
            return reward, done, False, f"You picked up {name}."
        if verb == "toggle and go through" and not obj.is_open:
            reward, done = self._primitive(PRIMITIVE_ACTIONS["toggle"])
            if done:
                return reward, done, False, f"You opened {name}."
        if not obj.is_open:
            reason = "locked" if obj.is_locked else "closed"
            return reward, done, False, f"You went to {name}, but it is {reason}."
        reward, done = self._run([PRIMITIVE_ACTIONS["forward"], PRIMITIVE_ACTIONS["forward"]])
        return reward, done, False, f"You went through {name}."
