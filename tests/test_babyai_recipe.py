"""recipes/babyai/reproduce_table.py end to end on a tiny model, on a mixed suite (BabyAI, TextWorldExpress,
ScienceWorld): every stage runs, the table adds up."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest
import torch

pytest.importorskip("minigrid")
pytest.importorskip("matplotlib")
pytest.importorskip("scienceworld")
pytest.importorskip("textworld_express")
if shutil.which("java") is None:
    pytest.skip("the mixed suite's ScienceWorld and TextWorldExpress need a Java runtime", allow_module_level=True)

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "babyai" / "reproduce_table.py"


def _load_recipe():
    spec = importlib.util.spec_from_file_location("reproduce_table", RECIPE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_one_command_runs_every_stage_and_the_table_adds_up(smol_tokenizer, tmp_path: Path):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    base = tmp_path / "tiny"
    config = LlamaConfig(
        vocab_size=len(smol_tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        eos_token_id=smol_tokenizer.eos_token_id,
        pad_token_id=smol_tokenizer.pad_token_id,
    )
    LlamaForCausalLM(config).save_pretrained(base)
    smol_tokenizer.save_pretrained(base)
    out = tmp_path / "run"
    argv = [
        "--suite",
        "mixed",
        "--output-dir",
        str(out),
        "--model",
        str(base),
        "--warm-levels",
        "GoToObj",
        "--warm-episodes",
        "2",
        "--held-in",
        "GoToLocal,PickupLoc,twx/cookingworld",
        "--held-out",
        "PickupDist,scienceworld/find-plant",
        "--train-episodes",
        "2",
        "--eval-episodes",
        "3",
        "--oracle",
        "random",
        "--epochs",
        "1",
        "--batch-size",
        "2",
        "--max-turns",
        "2",
        "--dtype",
        "float32",
        "--eval-batch-size",
        "8",
    ]
    recipe = _load_recipe()
    results = recipe.main(argv)

    saved = json.loads((out / "results.json").read_text())
    assert saved["rows"] == json.loads(json.dumps(results["rows"]))
    assert list(saved["rows"]) == ["base", "all", "critical", "random", "non_critical"]
    assert set(saved["expert_solved"]) == {
        "babyai/GoToObj",
        "babyai/GoToLocal",
        "babyai/PickupLoc",
        "twx/cookingworld",
    }
    assert all(v == "2/2" for v in saved["expert_solved"].values())
    levels = [
        "babyai/GoToLocal",
        "babyai/PickupLoc",
        "twx/cookingworld",
        "babyai/PickupDist",
        "scienceworld/find-plant",
    ]
    assert saved["config"]["max_turns"] == 2 and saved["config"]["max_new_tokens"] == 64  # the suite's, unless given
    for row, entry in saved["rows"].items():
        assert list(entry["levels"]) == levels
        records = [json.loads(line) for line in (out / "eval" / f"{row}-seed0.jsonl").read_text().splitlines()]
        for name in levels:
            mine = [r for r in records if r["env"] == name]
            assert [r["seed"] for r in mine] == [1_000_000, 1_000_001, 1_000_002]
            assert entry["levels"][name]["episodes"] == 3
            assert entry["levels"][name]["success_rate"] == sum(r["success"] for r in mine) / 3
            assert abs(entry["levels"][name]["mean_score"] - sum(r["score"] for r in mine) / 3) < 1e-9
            assert all(0 <= r["score"] <= 1 for r in mine)
        held_in = sum(entry["levels"][n]["success_rate"] for n in levels[:3]) / 3
        assert abs(entry["held_in"]["success_rate"] - held_in) < 1e-9
    for other in ("all", "random", "non_critical"):
        assert set(saved["rows"]["critical"]["minus"][other]) == {"held_in", "held_out"}
    # the five rows trained on the same demos: one annotation, one adapter per trained row
    assert sorted(p.name for p in (out / "adapters").iterdir()) == [
        "all-seed0",
        "critical-seed0",
        "non_critical-seed0",
        "random-seed0",
    ]
    table = (out / "table.md").read_text()
    assert all(f"`{row}`" in table for row in saved["rows"]) and "critical minus" in table
    assert "mean progress score" in table and "| twx/cookingworld |" in table
    assert (out / "chart.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # a re-run resumes: nothing is trained or evaluated again, the same table comes out
    mtimes = {p: p.stat().st_mtime for p in (out / "eval").iterdir()}
    assert recipe.main(argv)["rows"] == results["rows"]
    assert {p: p.stat().st_mtime for p in (out / "eval").iterdir()} == mtimes

    # a second training seed and more episodes: only the new adapters and the new seeds' episodes run
    more = argv[: argv.index("--eval-episodes")] + ["--eval-episodes", "4"] + argv[argv.index("--eval-episodes") + 2 :]
    before = [json.loads(line) for line in (out / "eval" / "critical-seed0.jsonl").read_text().splitlines()]
    more += ["--eval-episodes-for", "scienceworld/find-plant", "3"]  # the slow one keeps its 3
    results2 = recipe.main([*more, "--train-seeds", "0,1", "--rows", "base,critical"])
    assert sorted(p.name for p in (out / "adapters").iterdir()) == [
        "all-seed0",
        "critical-seed0",
        "critical-seed1",
        "non_critical-seed0",
        "random-seed0",
    ]
    old = [json.loads(line) for line in (out / "eval" / "critical-seed0.jsonl").read_text().splitlines()]
    assert len(old) == 4 * (len(levels) - 1) + 3 and all(r in old for r in before)  # the 3 played before, kept
    for row, entry in results2["rows"].items():
        for split in ("held_in", "held_out"):
            by_seed = entry[split]["by_training_seed"]
            assert len(by_seed) == (1 if row == "base" else 2)
            assert abs(entry[split]["success_rate"] - sum(by_seed) / len(by_seed)) < 1e-9
        per_seed = {name: 3 if name == "scienceworld/find-plant" else 4 for name in levels}
        assert {name: entry["levels"][name]["episodes"] for name in levels} == {
            name: n * (1 if row == "base" else 2) for name, n in per_seed.items()
        }
    assert "by training seed" in (out / "table.md").read_text()


def test_a_suite_gives_one_environment_its_own_episode_counts():
    recipe = _load_recipe()
    args = recipe.parse_args(
        [
            "--suite",
            "mixed",
            "--train-episodes-for",
            "twx/cookingworld",
            "5",
            "--eval-episodes-for",
            "scienceworld/find-plant",
            "20",
            "--eval-episodes",
            "50",
        ]
    )
    suite = recipe.env_names(args.held_in) + recipe.env_names(args.held_out)
    assert args.train_counts == {**{name: 30 for name in suite}, "twx/cookingworld": 5}
    assert args.eval_counts == {**{name: 50 for name in suite}, "scienceworld/find-plant": 20}
    assert recipe.parse_args(["--eval-episodes-for", "GoToLocal", "7"]).eval_counts["babyai/GoToLocal"] == 7
    for wrong in (
        ["--eval-episodes-for", "twx/coin", "3"],  # not in the suite
        ["--eval-episodes-for", "find-plant", "3"],  # a bare name is a BabyAI level
        ["--train-episodes-for", "twx/cookingworld", "0"],
    ):
        with pytest.raises(SystemExit):
            recipe.parse_args(["--suite", "mixed", *wrong])
