"""ScienceWorld and TextWorldExpress: seeds that name splits, one JVM per library, gold demos that replay
to success, invalid actions counted, progress scores in [0, 1] (skipped without the packages or Java)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

pytest.importorskip("textworld_express")
pytest.importorskip("scienceworld")
if shutil.which("java") is None:
    pytest.skip("no Java runtime", allow_module_level=True)

from atlas_hf.evaluation.envs import SPLIT_STRIDE, expert_trajectories, make_env  # noqa: E402
from atlas_hf.evaluation.envs import jvm  # noqa: E402
from atlas_hf.evaluation.envs.gold_expert import reason  # noqa: E402
from atlas_hf.errors import InvalidInputError  # noqa: E402
from atlas_hf.evaluation.evaluator import EvaluationReport, evaluate_agent, paired_difference  # noqa: E402


@pytest.fixture(autouse=True, scope="module")
def _shut_the_jvms_down_after_this_module():
    yield
    jvm.shutdown()  # the rest of the suite does not pay for two idle JVMs
    assert jvm.running_gateways() == 0


TWX_GAMES = ["twx/cookingworld", "twx/twc", "twx/coin", "twx/mapreader", "twx/cookingworld:numLocations=2"]


def replay_policy(demos_in_order: list[list[str]]):
    """A scripted policy: each new conversation gets the next demo's replies, in evaluation order (two
    seeds may open on the same text, so a demo is not found by its first message)."""
    pending = iter(demos_in_order)
    assigned: dict[int, list[str]] = {}

    def policy(conversations):
        for conversation in conversations:
            if len(conversation) == 1:
                assigned[id(conversation)] = next(pending)
        return [assigned[id(c)][(len(c) - 1) // 2] for c in conversations]

    return policy


@pytest.mark.parametrize("name", TWX_GAMES + ["scienceworld/find-living-thing"])
def test_every_gold_demo_replays_to_success_through_evaluate_agent(name):
    episodes = 2 if name.startswith("scienceworld") else 6
    demos = expert_trajectories(name, episodes, seed=0)
    assert list(demos["seed"]) == list(range(episodes))  # the gold paths solve every one of these games
    replies = [[m["content"] for m in row["messages"][1::2]] for row in demos]
    assert all(r.startswith("Thought: ") and "\nAction: " in r for rs in replies for r in rs)
    assert all(row["score"] == 1.0 and row["success"] and row["env"] == name for row in demos)
    report = evaluate_agent(
        replay_policy(replies), name, episodes=episodes, seed=0, max_turns=100, batch_size=4, progress=False
    )
    replayed = {r["seed"]: r for r in report.records}
    for row in demos:
        record = replayed[row["seed"]]
        assert record["success"] and record["score"] == 1.0 and record["turns"] == row["turns"]
        assert [m["content"] for m in record["messages"]] == [m["content"] for m in row["messages"]]
        assert record["invalid_actions"] == 0


def test_one_jvm_per_library_shared_by_every_env_object():
    envs = [make_env("twx/cookingworld") for _ in range(3)] + [make_env("twx/twc")]
    science = [make_env("scienceworld/find-plant") for _ in range(2)]
    assert jvm.running_gateways() == 2
    first = {env.reset(seed) for env in envs for seed in (0,)}
    assert len(first) == 2  # three cookingworld objects, one game; twc another
    assert len({s.reset(0) for s in science}) == 1


@pytest.mark.parametrize("name", ["twx/cookingworld", "twx/twc", "twx/coin", "twx/mapreader"])
def test_training_and_test_seeds_play_disjoint_games(name):
    env = make_env(name)
    train = {env.generator_seed(i) for i in range(20)}
    test = {env.generator_seed(SPLIT_STRIDE + i) for i in range(20)}
    assert {fold for fold, _ in train} == {"train"} and {fold for fold, _ in test} == {"test"}
    assert not {s for _, s in train} & {s for _, s in test}
    # and the games themselves differ: no first observation of a test seed is a training one's
    train_games = {env.reset(i) for i in range(20)}
    assert not train_games & {env.reset(SPLIT_STRIDE + i) for i in range(20)}


def test_scienceworld_variations_come_from_its_own_splits():
    env = make_env("scienceworld/boil")
    train = [env.variation(i)[1] for i in range(3)]
    test = [env.variation(SPLIT_STRIDE + i)[1] for i in range(3)]
    assert not set(train) & set(test)
    with pytest.raises(InvalidInputError, match="variation 500 of the train split"):
        env.variation(500)


def test_same_seed_same_episode():
    a, b = make_env("twx/mapreader"), make_env("twx/mapreader")
    actions = ["Action: look around", "Action: move north", "Action: read map", "Action: move east"]
    assert a.reset(3) == b.reset(3)
    assert [a.step(x).observation for x in actions] == [b.step(x).observation for x in actions]
    assert a.reset(3) != a.reset(4)


def test_scienceworld_same_seed_same_text_although_the_simulator_shuffles_its_lists():
    env = make_env("scienceworld/chemistry-mix-paint-secondary-color")  # its desk lists come shuffled

    def play(seed):
        env.reset(seed, gold_path=True)
        gold = env.gold_actions()
        observations = [env.reset(seed)]
        for action in gold[:20]:
            result = env.step(action)
            observations.append(result.observation)
            if result.done:
                break
        return observations

    first = [play(seed) for seed in (0, 1)]
    assert [play(seed) for seed in (0, 1)] == first  # reloaded in the same JVM, after other loads


def test_scienceworld_lists_are_sorted_with_each_thing_kept_whole():
    from atlas_hf.evaluation.envs.scienceworld import canonical

    line = "\ta table. On the table is: a switch, which is off, a bowl (containing soil, a apple), a battery."
    assert (
        canonical(line)
        == "\ta table. On the table is: a battery, a bowl (containing a apple, soil), a switch, which is off."
    )
    assert (
        canonical("Here:\n\tthe agent\n\ta cup (containing b, a)\nYou also see:")
        == "Here:\n\ta cup (containing a, b)\n\tthe agent\nYou also see:"
    )


@pytest.mark.parametrize("name", ["twx/cookingworld", "scienceworld/find-living-thing"])
def test_invalid_actions_are_counted_and_never_raise(name):
    replies = ["Thought: hmm.\nAction: fly to the moon", "", "Action: check valid actions"]
    turn = iter(range(100))
    report = evaluate_agent(
        lambda convs: [replies[next(turn) % 3] for _ in convs],
        name,
        episodes=1,
        seed=0,
        max_turns=6,
        batch_size=1,
        progress=False,
    )
    record = report.records[0]
    assert record["turns"] == 6 and not record["success"] and record["score"] == 0.0
    assert record["invalid_actions"] == 4  # two of every three replies; `check valid actions` is free
    assert "Valid actions:" in record["messages"][6]["content"]
    assert report.envs[name].invalid_action_rate == pytest.approx(4 / 6)


def test_step_limit_ends_an_episode_and_partial_credit_is_a_score_in_0_1():
    env = make_env("twx/twc:step_limit=3")
    env.reset(1, gold_path=True)
    gold = env.gold_actions()
    results = [env.step(f"Action: {a}") for a in gold[:2]] + [env.step("Action: inventory")]
    assert results[-1].done and not results[-1].info["success"]
    scores = [r.info["score"] for r in results]
    assert 0.0 < scores[-1] < 1.0 and all(0.0 <= s <= 1.0 for s in scores) and scores == sorted(scores)


def test_env_arguments_in_the_name_and_bad_ones_named():
    env = make_env("twx/cookingworld:numLocations=2,numIngredients=3")
    assert env.params["numLocations"] == 2 and env.params["numIngredients"] == 3
    assert env.name == "twx/cookingworld:numLocations=2,numIngredients=3"
    with pytest.raises(InvalidInputError, match="not `key=value`"):
        make_env("twx/cookingworld:numLocations")
    from atlas_hf.evaluation.evaluator import split_env_names

    assert split_env_names("twx/cookingworld:numLocations=2,numIngredients=3, twx/coin,babyai/GoToLocal") == [
        "twx/cookingworld:numLocations=2,numIngredients=3",
        "twx/coin",
        "babyai/GoToLocal",
    ]
    assert split_env_names("twx/coin:numLocations=2,GoToLocal,GoToLocal") == ["twx/coin:numLocations=2", "GoToLocal"]


def test_missing_java_says_what_to_install(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(jvm.JavaNotFoundError, match="Install a Java runtime"):
        jvm.require_java()


def test_thoughts_say_why():
    assert reason("take knife") == "I need the knife, so I take it"
    assert reason("open door to kitchen") == "the door to the kitchen is in my way; I open it"
    assert reason("0") == "several things match; I pick option 0"


def test_paired_difference_on_progress_scores():
    rng = np.random.default_rng(0)
    sa, sb = rng.random(50), rng.random(50) * 0.5

    def report(scores):
        return EvaluationReport.from_records(
            [
                {
                    "env": "x",
                    "seed": i,
                    "success": s == 1.0,
                    "score": float(s),
                    "reward": 0.0,
                    "turns": 1,
                    "invalid_actions": 0,
                }
                for i, s in enumerate(scores)
            ]
        )

    result = paired_difference(report(sa), report(sb), metric="score", resamples=2000)
    assert result["difference"] == pytest.approx(sa.mean() - sb.mean())
    assert result["ci95"][0] < sa.mean() - sb.mean() < result["ci95"][1] and result["metric"] == "score"
    assert report(sa).envs["x"].mean_score == pytest.approx(sa.mean())
    low, high = report(sa).envs["x"].score_ci95
    assert low < sa.mean() < high
    with pytest.raises(InvalidInputError, match="metric"):
        paired_difference(report(sa), report(sb), metric="reward")
