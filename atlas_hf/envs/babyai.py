"""BabyAI (through `minigrid`) as a text environment, and its planning expert as a demo writer.

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

from atlas_hf.envs.base import StepResult
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

_PRIMITIVE = {"left": 0, "right": 1, "forward": 2, "pickup": 3, "drop": 4, "toggle": 5, "done": 6}
_OBJECT_TYPES = ("ball", "box", "key", "door")
_ACTION_LINE = re.compile(r"^\s*action\s*:\s*(.*)$", re.IGNORECASE | re.MULTILINE)
_NAMED = re.compile(
    r"^(go to|goto|pick ?up|go through|toggle and go through)\s+(?:the\s+)?([a-z]+)\s+([a-z]+)\s+(\d+)$"
)


def parse_action(text: str) -> str:
    """The action in a reply: the text after the last `Action:` (else the last line), lower-cased."""
    found = _ACTION_LINE.findall(text or "")
    line = found[-1] if found else (text or "").strip().splitlines()[-1:] or [""]
    line = line if isinstance(line, str) else line[0]
    return re.sub(r"\s+", " ", line.strip().strip(".!\"'`").strip().lower())


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
    """

    def __init__(self, level: str = "GoToLocal", max_steps: int | None = None) -> None:
        gymnasium = _require_minigrid()
        self.name = f"babyai/{level}"
        self.level = level
        kwargs = {"max_steps": max_steps} if max_steps else {}
        self._gym = gymnasium.make(f"BabyAI-{level}-v0", **kwargs)
        self.env: Any = self._gym.unwrapped
        self.primitive_observers: list[Callable[[int], None]] = []
        self._ids: dict[int, str] = {}
        self._counts: dict[tuple[str, str], int] = {}
        self._seen: set[tuple[int, int]] = set()
        self._visible: dict[str, Any] = {}
        self._done = False
        self.mission = ""

    # ----------------------------------------------------------------- episode
    def reset(self, seed: int) -> str:
        """Start the episode of environment seed `seed`; return the first user message."""
        with contextlib.redirect_stdout(io.StringIO()):  # minigrid prints its rejected level samples
            self._gym.reset(seed=int(seed))
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
        return StepResult(observation, reward, done, {"success": success, "invalid_action": invalid, "action": action})

    # ----------------------------------------------------------------- what the agent sees
    def _object_name(self, obj: Any) -> str:
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
        self._visible = {}
        parts = []
        for pos in sorted(self._look(), key=lambda p: (abs(self._relative(p)[0]) + abs(self._relative(p)[1]), p)):
            obj = env.grid.get(*pos)
            if obj is None or obj.type not in _OBJECT_TYPES or pos == tuple(env.agent_pos):
                continue
            name = self._object_name(obj)
            self._visible[name] = obj
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
                blocker = "a wall" if cell.type == "wall" else f"the {self._object_name(cell)}"
                break
            distance += 1
        ahead = f"Ahead: {blocker}, {distance} step{'s' if distance > 1 else ''} away." if blocker else "Ahead: open space."
        carrying = f"You carry the {self._object_name(env.carrying)}." if env.carrying else "You carry nothing."
        return f"{seen} {ahead} {carrying}"

    def available_actions(self) -> list[str]:
        """The actions that name something in view now (for `check available actions`)."""
        actions = ["turn left", "turn right", "move forward"]
        for name, obj in self._visible.items():
            actions.append(f"go to {name}")
            if obj.type == "door":
                actions += [f"go through {name}", f"toggle and go through {name}"]
            else:
                actions.append(f"pickup {name}")
        actions += ["toggle", "drop", "check available actions"]
        return actions

    # ----------------------------------------------------------------- acting
    def _primitive(self, action: int) -> tuple[float, bool]:
        _, reward, terminated, truncated, _ = self._gym.step(action)
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
                (_PRIMITIVE["left"], (x, y, (d - 1) % 4)),
                (_PRIMITIVE["right"], (x, y, (d + 1) % 4)),
                (_PRIMITIVE["forward"], (nx, ny, d) if passable else None),
            ):
                if nxt is not None and nxt not in parents:
                    parents[nxt] = (state, move)
                    queue.append(nxt)
        return None

    def _act(self, action: str) -> tuple[float, bool, bool, str]:
        """Play a parsed action: (reward, done, invalid, feedback)."""
        simple = {"turn left": "left", "turn right": "right", "move forward": "forward", "go forward": "forward",
                  "toggle": "toggle", "drop": "drop", "pickup": "pickup", "pick up": "pickup"}
        if action in simple:
            before = (tuple(self.env.agent_pos), self.env.carrying)
            reward, done = self._primitive(_PRIMITIVE[simple[action]])
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
        obj = self._visible.get(name)
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
            reward, done = self._primitive(_PRIMITIVE["pickup"])
            return reward, done, False, f"You picked up {name}."
        if verb == "toggle and go through" and not obj.is_open:
            reward, done = self._primitive(_PRIMITIVE["toggle"])
            if done:
                return reward, done, False, f"You opened {name}."
        if not obj.is_open:
            reason = "locked" if obj.is_locked else "closed"
            return reward, done, False, f"You went to {name}, but it is {reason}."
        reward, done = self._run([_PRIMITIVE["forward"], _PRIMITIVE["forward"]])
        return reward, done, False, f"You went through {name}."


# --------------------------------------------------------------------- the expert
def _describe(desc: Any, with_location: bool = False) -> str:
    """An object description in words, read off its fields. (`ObjDesc.surface` would recompute which
    objects match from the agent's current pose, changing the very set the mission is verified on.)"""
    words = " ".join(w for w in (desc.color, desc.type or "object") if w)
    location = ""
    if with_location and desc.loc:
        location = {"front": " in front of you", "behind": " behind you"}.get(desc.loc, f" on your {desc.loc}")
    return f"the {words}{location}"


def _subgoal_kind(subgoal: Any) -> str:
    return type(subgoal).__name__.replace("Subgoal", "").lower()


class BabyAIExpert:
    """minigrid's `BabyAIBot`, speaking the text action space with thoughts from its subgoal stack.

    The bot plans in primitive moves and is kept in step with every primitive move the text
    environment makes. Each turn, its plan becomes one text action: `pickup <obj>` when it is about
    to go to a visible object and pick it up, `go to <obj>` when it is going to a visible object,
    `toggle`/`drop` when that is its next move, and its primitive move otherwise (exploring, or
    stepping to a free cell).
    """

    def __init__(self, env: BabyAITextEnv) -> None:
        from minigrid.utils.baby_ai_bot import BabyAIBot

        self.text_env = env
        self.bot = BabyAIBot(env._gym)
        self.suggested = self.bot.replan()
        self._known: set[str] = set()
        env.primitive_observers.append(self._observe)

    def _observe(self, action: int) -> None:
        self.suggested = self.bot.replan(action)

    def plan_text(self) -> str:
        """The plan the bot starts from, in words (the first thought of a demo)."""
        steps = []
        for subgoal in reversed(self.bot.stack):
            kind, datum = _subgoal_kind(subgoal), getattr(subgoal, "datum", None)
            what = _describe(datum, with_location=True) if hasattr(datum, "obj_set") else None
            if kind == "gonextto" and what:
                steps.append(f"bring it next to {what}" if subgoal.reason == "PutNext" else f"find {what} and go to it")
            elif kind == "pickup":
                steps.append("pick it up")
            elif kind == "open":
                steps.append("open it")
            elif kind == "drop" and steps and steps[-1] != "pick it up":
                steps.append("drop it there")
        return "; then ".join(steps) if steps else "finish the mission"

    def _target(self) -> tuple[str | None, Any, str]:
        """(name of the visible target, the object, the subgoal below the current one)."""
        stack = self.bot.stack
        if not stack or _subgoal_kind(stack[-1]) != "gonextto" or stack[-1].reason not in (None, "Open"):
            return None, None, ""
        datum = stack[-1].datum
        if hasattr(datum, "obj_set"):
            obj, _ = self.bot._find_obj_pos(datum)
        elif hasattr(datum, "cur_pos"):
            obj = datum
        else:
            obj = self.text_env.env.grid.get(*datum)
        below = _subgoal_kind(stack[-2]) if len(stack) > 1 else ""
        for name, seen in self.text_env._visible.items():
            if seen is obj:
                return name, obj, below
        return None, None, below

    def _looking_for(self) -> str | None:
        """The description of the object the bot is heading for (top-most described goal)."""
        for subgoal in reversed(self.bot.stack):
            datum = getattr(subgoal, "datum", None)
            if _subgoal_kind(subgoal) == "gonextto" and hasattr(datum, "obj_set"):
                return _describe(datum)
        return None

    def act(self, first: bool = False) -> str:
        """The expert's next reply: a thought and an action."""
        env, stack = self.text_env, self.bot.stack
        name, obj, below = self._target()
        thought = f"My plan: {self.plan_text()}. " if first else ""
        new = name is not None and name not in self._known
        if name is not None and env.plan_path(tuple(obj.cur_pos)) is not None:
            self._known.add(name)
            seen = f"I can see the {name}" if new else f"The {name} is in view"
            if below == "pickup" and obj.type != "door":
                return f"Thought: {thought}{seen}; I will pick it up.\nAction: pickup {name}"
            goal = "open it" if below == "open" else "reach it"
            return f"Thought: {thought}{seen}; I will go to it to {goal}.\nAction: go to {name}"
        top = _subgoal_kind(stack[-1]) if stack else ""
        front = env.env.grid.get(*env.env.front_pos)
        front_name = env._object_name(front) if front is not None and front.type in _OBJECT_TYPES else None
        move = self.suggested
        if move == _PRIMITIVE["toggle"] and front_name:
            verb = "unlock it with the key I carry" if getattr(front, "is_locked", False) else "open it"
            return f"Thought: {thought}The {front_name} is in front of me; I will {verb}.\nAction: toggle"
        if move == _PRIMITIVE["pickup"] and front_name:
            return f"Thought: {thought}The {front_name} is in front of me; I will pick it up.\nAction: pickup {front_name}"
        if move == _PRIMITIVE["drop"] and env.env.carrying is not None:
            what = env._object_name(env.env.carrying)
            return f"Thought: {thought}This is the place; I will put down the {what} here.\nAction: drop"
        words = {_PRIMITIVE["left"]: "turn left", _PRIMITIVE["right"]: "turn right", _PRIMITIVE["forward"]: "move forward"}
        action = words.get(move, "turn left")
        looking_for = self._looking_for()
        carried = env.env.carrying
        if top == "gonextto" and stack[-1].reason == "PutNext" and carried is not None:
            why = f"I will bring the {env._object_name(carried)} next to {_describe(stack[-1].datum)}."
        elif looking_for and (top == "explore" or stack[-1].reason == "Explore" or name is None):
            why = f"I am looking for {looking_for}, which I cannot reach yet; I will explore."
        else:
            why = "I will move into position."
        return f"Thought: {thought}{why}\nAction: {action}"


def expert_episode(level: str, seed: int, max_turns: int = 64) -> dict[str, Any]:
    """One `BabyAIBot` episode in text: `messages`, `env`, `seed`, `success`, `reward`, `turns`."""
    from minigrid.utils.baby_ai_bot import DisappearedBoxError

    env = BabyAITextEnv(level)
    messages = [{"role": "user", "content": env.reset(seed)}]
    expert = BabyAIExpert(env)
    reward, success = 0.0, False
    for turn in range(max_turns):
        try:
            reply = expert.act(first=turn == 0)
            result = env.step(reply)
        except (AssertionError, DisappearedBoxError):  # the bot gave up (it does on a few rare layouts)
            success = False
            break
        messages.append({"role": "assistant", "content": reply})
        reward, success = result.reward, result.info["success"]
        if result.done:
            break
        messages.append({"role": "user", "content": result.observation})
    return {"messages": messages, "env": env.name, "seed": int(seed), "success": bool(success),
            "reward": float(reward), "turns": (len(messages)) // 2}
