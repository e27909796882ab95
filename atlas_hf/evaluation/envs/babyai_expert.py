"""BabyAI's planning expert (minigrid's `BabyAIBot`) writing demos in the text environment's words.

`expert_episode` plays one level and seed and returns the chat a student is trained on: the
observations of `BabyAITextEnv` as user turns, and the expert's thought and high-level action as
assistant turns, the first one starting with the bot's plan.

Requires the optional extra `atlas-hf[envs]` (`pip install minigrid`).
"""

from __future__ import annotations

from typing import Any

from atlas_hf.evaluation.envs.babyai import OBJECT_TYPES, PRIMITIVE_ACTIONS, BabyAITextEnv
from atlas_hf.trajectories.schema import MESSAGES


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

    Args:
        env (`BabyAITextEnv`): The environment, reset to the episode the expert plays.
    """

    def __init__(self, env: BabyAITextEnv) -> None:
        from minigrid.utils.baby_ai_bot import BabyAIBot

        self.text_env = env
        self.bot = BabyAIBot(env.gym_env)
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
                steps.append(
                    f"bring it next to {what}" if subgoal.reason == "PutNext" else f"find {what} and go to it"
                )
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
        for name, seen in self.text_env.visible.items():
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
        front_name = env.object_name(front) if front is not None and front.type in OBJECT_TYPES else None
        move = self.suggested
        if move == PRIMITIVE_ACTIONS["toggle"] and front_name:
            verb = "unlock it with the key I carry" if getattr(front, "is_locked", False) else "open it"
            return f"Thought: {thought}The {front_name} is in front of me; I will {verb}.\nAction: toggle"
        if move == PRIMITIVE_ACTIONS["pickup"] and front_name:
            return (
                f"Thought: {thought}The {front_name} is in front of me; I will pick it up.\n"
                f"Action: pickup {front_name}"
            )
        if move == PRIMITIVE_ACTIONS["drop"] and env.env.carrying is not None:
            what = env.object_name(env.env.carrying)
            return f"Thought: {thought}This is the place; I will put down the {what} here.\nAction: drop"
        words = {
            PRIMITIVE_ACTIONS["left"]: "turn left",
            PRIMITIVE_ACTIONS["right"]: "turn right",
            PRIMITIVE_ACTIONS["forward"]: "move forward",
        }
        action = words.get(move, "turn left")
        looking_for = self._looking_for()
        carried = env.env.carrying
        if top == "gonextto" and stack[-1].reason == "PutNext" and carried is not None:
            why = f"I will bring the {env.object_name(carried)} next to {_describe(stack[-1].datum)}."
        elif looking_for and (top == "explore" or stack[-1].reason == "Explore" or name is None):
            why = f"I am looking for {looking_for}, which I cannot reach yet; I will explore."
        else:
            why = "I will move into position."
        return f"Thought: {thought}{why}\nAction: {action}"


def expert_episode(level: str, seed: int, max_turns: int = 64) -> dict[str, Any]:
    """One `BabyAIBot` episode in text.

    Args:
        level (`str`): A BabyAI level (`LEVELS`), e.g. `"GoToLocal"`.
        seed (`int`): The environment seed.
        max_turns (`int`, defaults to `64`): Expert turns before the episode is cut.

    Returns:
        `dict`: `messages` (the chat), `env`, `seed`, `success`, `reward`, `score` (1.0 on success, else
        0.0: BabyAI has no partial credit), `turns`. An episode the bot
        gives up on (it does on a few rare layouts) ends there with `success=False`.
    """
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
    return {
        MESSAGES: messages,
        "env": env.name,
        "seed": int(seed),
        "success": bool(success),
        "reward": float(reward),
        "score": float(bool(success)),
        "turns": (len(messages)) // 2,
    }
