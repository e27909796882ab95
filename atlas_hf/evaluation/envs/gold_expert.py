"""Experts from gold paths: a simulator's gold commands as "Thought: ... Action: ..." demos.

ScienceWorld and TextWorldExpress generate a gold command sequence for each game. `gold_episode`
plays it in the text environment twice: once to drop the commands the simulator does not accept
as written (some gold steps are), and once more, from a fresh reset, to write the demo with the
commands that remain, so that a demo is exactly what replaying it in the environment does. The
thoughts are short: the first states the task and a plan (the gold path's milestones, the steps
that raise the score), and the milestones say why they matter.
"""

from __future__ import annotations

import re
from typing import Any

from atlas_hf.trajectories.schema import MESSAGES

_REASONS: tuple[tuple[str, str], ...] = (
    (r"^look around$", "I look around to see what is here"),
    (r"^inventory$", "I check what I carry"),
    (r"^(?:move|go) (?:to )?(?:the )?(north|south|east|west)$", "I head {0}"),
    (r"^go to (?:the )?(.+)$", "I go to the {0}"),
    (r"^open door to (?:the )?(.+)$", "the door to the {0} is in my way; I open it"),
    (r"^open (?:the )?(.+)$", "I open the {0} to get at what is inside"),
    (r"^(?:take|pick up) (?:the )?(.+?)(?: from .+)?$", "I need the {0}, so I take it"),
    (r"^read (?:the )?(.+)$", "the {0} should tell me what to do"),
    (r"^focus on (?:the )?(.+)$", "the task asks me to focus on the {0}"),
    (r"^(?:put|move|place) (?:the )?(.+?) (?:in|into|on|to) (?:the )?(.+)$", "the {0} goes to the {1}"),
    (r"^pour (?:the )?(.+?) into (?:the )?(.+)$", "I pour the {0} into the {1}"),
    (r"^(chop|slice|dice|cook|fry|roast|grill|bake) (?:the )?(.+?)(?: with .+)?$", "the recipe says to {0} the {1}"),
    (r"^prepare meal$", "everything the recipe needs is ready; I prepare the meal"),
    (r"^eat (?:the )?(.+)$", "the {0} is ready; I eat it"),
    (r"^activate (?:the )?(.+)$", "I switch the {0} on"),
    (r"^deactivate (?:the )?(.+)$", "I switch the {0} off"),
    (r"^connect (.+?) to (.+)$", "I wire the {0} to the {1}"),
    (r"^use (?:the )?(.+?) on (?:the )?(.+)$", "I use the {0} on the {1}"),
    (r"^wait\d*$", "I wait for the change to happen"),
    (r"^\d+$", "several things match; I pick option {0}"),
)


def reason(action: str) -> str:
    """Why an action is taken, in a few words (its verb's usual purpose)."""
    for pattern, text in _REASONS:
        match = re.match(pattern, action, re.IGNORECASE)
        if match:
            groups = match.groups() or (action,)
            return text.format(*groups)
    return f"next, I {action}"


def plan(task: str, milestones: list[str]) -> str:
    """The first thought's plan: the task and the milestones to reach, in order.

    Args:
        task (`str`): The task as the environment states it.
        milestones (`list[str]`): The gold actions that raise the score, in order.

    Returns:
        `str`: The task, then "My plan: ..." (at most six milestones).
    """
    steps = list(dict.fromkeys(milestones))
    shown = ", then ".join(steps[:6]) + (", and so on" if len(steps) > 6 else "")
    return f"{task.strip()} My plan: {shown}." if shown else task.strip()


def gold_episode(env: Any, seed: int, max_turns: int = 100) -> dict[str, Any]:
    """One demo of environment seed `seed` from its gold path.

    Args:
        env: A ScienceWorld or TextWorldExpress text environment (`reset(seed, gold_path=True)`,
            `gold_actions()`, `step`).
        seed (`int`): The environment seed.
        max_turns (`int`): Turns after which the demo is cut (and counts as unsolved).

    Returns:
        `dict`: `messages`, `env`, `seed`, `success`, `reward`, `score` (progress in [0, 1]), `turns`.
    """
    env.reset(seed, gold_path=True)
    accepted, milestones = [], set()
    for action in env.gold_actions()[:max_turns]:
        result = env.step(action)
        if result.info["invalid_action"]:
            continue
        if result.reward > 0:
            milestones.add(len(accepted))
        accepted.append(action)
        if result.done:
            break
    messages = [{"role": "user", "content": env.reset(seed)}]
    result = None
    for turn, action in enumerate(accepted):
        why = reason(action)
        if turn == 0:
            why = f"{plan(env.task, [accepted[i] for i in sorted(milestones)])} First, {why}"
        elif turn in milestones:
            why = f"{why[0].upper()}{why[1:]}; this gets me closer to the goal"
        else:
            why = f"{why[0].upper()}{why[1:]}"
        reply = f"Thought: {why}.\nAction: {action}"
        result = env.step(reply)
        messages.append({"role": "assistant", "content": reply})
        if result.done:
            break
        messages.append({"role": "user", "content": result.observation})
    info = result.info if result is not None else {"success": False, "score": 0.0}
    return {
        MESSAGES: messages,
        "env": env.name,
        "seed": int(seed),
        "success": bool(info["success"]),
        "reward": float(result.reward if result is not None else 0.0),
        "score": float(info["score"]),
        "turns": sum(m["role"] == "assistant" for m in messages),
    }
