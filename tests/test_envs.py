"""The BabyAI text environment and its expert: determinism, replayable demos, bad actions, no map leak."""

from __future__ import annotations

import pytest

pytest.importorskip("minigrid")

from atlas_hf.evaluation.envs import expert_trajectories, list_envs, make_env  # noqa: E402
from atlas_hf.evaluation.envs.babyai import BabyAITextEnv, parse_action  # noqa: E402
from atlas_hf.errors import EnvironmentNotFoundError  # noqa: E402
from atlas_hf.evaluation.evaluator import evaluate_agent  # noqa: E402

LEVELS = ["babyai/GoToLocal", "babyai/PutNextLocal", "babyai/UnlockLocal", "babyai/OpenTwoDoors"]


def replay_policy(demos_in_order: list[list[str]]):
    """A scripted policy: each new conversation gets the next demo's replies, in evaluation order."""
    pending = iter(demos_in_order)
    assigned: dict[int, list[str]] = {}

    def policy(conversations):
        replies = []
        for conversation in conversations:
            if len(conversation) == 1:
                assigned[id(conversation)] = next(pending)
            replies.append(assigned[id(conversation)][(len(conversation) - 1) // 2])
        return replies

    return policy


def test_registry_lists_babyai_and_refuses_unknown_names():
    assert {"babyai/GoToLocal", "babyai/PickupLoc", "babyai/PutNextLocal"} <= set(list_envs())
    with pytest.raises(EnvironmentNotFoundError, match="babyai/GoToLocal"):
        make_env("babyai/NoSuchLevel")


def test_same_seed_same_episode_and_different_seeds_differ():
    actions = [
        "Thought: look.\nAction: turn left",
        "Action: move forward",
        "Action: turn right",
        "Action: move forward",
    ]

    def play(seed: int) -> list[str]:
        env = make_env("babyai/PutNextLocal")
        texts = [env.reset(seed)]
        for action in actions:
            result = env.step(action)
            texts.append(result.observation)
            if result.done:
                break
        return texts

    assert play(7) == play(7)
    firsts = {play(seed)[0] for seed in range(6)}
    assert len(firsts) > 1


@pytest.mark.parametrize("level", LEVELS)
def test_every_expert_demo_replays_to_success_through_evaluate_agent(level: str):
    demos = expert_trajectories(level, episodes=12, seed=300)
    assert len(demos) == 12 and all(demos["success"]) and demos["seed"] == list(range(300, 312))
    assert all(
        m["role"] == ("user" if i % 2 == 0 else "assistant") for row in demos["messages"] for i, m in enumerate(row)
    )
    replies = [[m["content"] for m in row if m["role"] == "assistant"] for row in demos["messages"]]
    report = evaluate_agent(replay_policy(replies), level, episodes=12, seed=300, batch_size=5, progress=False)
    result = report.envs[level]
    assert result.success_rate == 1.0 and result.invalid_action_rate == 0.0
    # the evaluator rebuilt exactly the demos' conversations
    assert [r["messages"] for r in report.records] == [list(row) for row in demos["messages"]]
    assert [r["turns"] for r in report.records] == demos["turns"]


def test_demos_have_thoughts_from_the_plan_and_parseable_actions():
    demos = expert_trajectories("babyai/PutNextLocal", episodes=5, seed=0)
    for row in demos["messages"]:
        first = row[1]["content"]
        assert first.startswith("Thought: My plan: ") and "\nAction: " in first
        assert "Mission: put the" in row[0]["content"]
        for message in row[1::2]:
            assert parse_action(message["content"]) in message["content"].lower()


def test_invalid_actions_are_counted_and_explained_never_raised():
    env = make_env("babyai/GoToLocal")
    env.reset(3)
    for text in ("", "dance wildly", "Action: go to purple unicorn 7", "Action: pickup red door 1"):
        result = env.step(text)
        assert result.info["invalid_action"] and not result.done
        assert "Invalid action" in result.observation or "cannot" in result.observation
    listed = env.step("Action: check available actions")
    assert not listed.info["invalid_action"] and "go to" in listed.observation

    report = evaluate_agent(
        lambda convs: ["I apologise, I cannot help."] * len(convs),
        "babyai/GoToLocal",
        episodes=3,
        seed=0,
        max_turns=4,
        progress=False,
    )
    result = report.envs["babyai/GoToLocal"]
    assert result.success_rate == 0.0 and result.invalid_action_rate == 1.0 and result.mean_turns == 4


def test_go_to_plans_only_over_seen_cells():
    env = BabyAITextEnv("GoToLocal")
    env.reset(11)
    unseen = [
        (x, y)
        for x in range(1, env.env.width - 1)
        for y in range(1, env.env.height - 1)
        if (x, y) not in env._seen and env.env.grid.get(x, y) is None
    ]
    assert unseen, "seed 11 should start with part of the room out of view"
    for target in unseen:
        path = env.plan_path(target)
        # a path ending in front of an unseen cell may exist, but never one that walks through unseen cells
        if path is not None:
            probe = BabyAITextEnv("GoToLocal")
            probe.reset(11)
            visited = []
            for move in path:
                probe._primitive(move)
                visited.append(tuple(int(v) for v in probe.env.agent_pos))
            assert all(cell in env._seen for cell in visited)


def test_parse_action_reads_the_last_action_line():
    assert parse_action("Thought: go.\nAction: Go to the Red Ball 1.") == "go to the red ball 1"
    assert parse_action("turn left") == "turn left"
    assert parse_action("") == ""
