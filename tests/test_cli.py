"""The `atlas-hf` command as a shell user runs it: real processes, exit codes, files on disk."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from datasets import load_from_disk

from atlas_hf.annotation.agreement import oracle_agreement
from atlas_hf.trajectories.sample import load_sample

COMMANDS = ["annotate", "train", "publish", "eval", "eval-oracle", "demo"]


def atlas_hf(*args: str, cwd: Path | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "atlas_hf.scripts.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, **(env or {})},
        timeout=600,
    )


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command):
    result = atlas_hf(command, "--help")
    assert result.returncode == 0, result.stderr
    assert f"atlas-hf {command}" in result.stdout


def test_version():
    from atlas_hf import __version__

    result = atlas_hf("--version")
    assert result.returncode == 0 and result.stdout.strip() == f"atlas-hf {__version__}"


def test_unknown_command_is_a_usage_error():
    result = atlas_hf("frobnicate")
    assert result.returncode == 2 and "invalid choice" in result.stderr


def test_annotate_then_eval_oracle_then_publish(tmp_path):
    out = tmp_path / "annotated"
    result = atlas_hf("annotate", "sample", "--oracle", "random", "-o", str(out), "--cache-dir", str(tmp_path / "c"))
    assert result.returncode == 0, result.stderr
    annotated = load_from_disk(str(out))
    reference = load_sample()
    assert annotated["messages"] == reference["messages"]
    assert all(0 < len(s) for s in annotated["critical_steps"])

    result = atlas_hf("eval-oracle", str(out), "sample")
    assert result.returncode == 0, result.stderr
    report = oracle_agreement(annotated, reference)
    assert f"{report.steps.f1:.3f}" in result.stdout

    result = atlas_hf("publish", "--dataset", str(out), "--local-dir", str(tmp_path / "hub"))
    assert result.returncode == 0, result.stderr
    card = (tmp_path / "hub" / "dataset" / "README.md").read_text()
    assert "critical-steps" in card and "random" in card
    assert f"your-name/{out.name}" in card and "atlas-hf/demo" not in card  # named after its folder, not the demo
    assert list((tmp_path / "hub" / "dataset" / "data").glob("*.parquet"))


def test_all_steps_baseline_marks_every_step(tmp_path):
    result = atlas_hf(
        "annotate", "sample", "--oracle", "all", "-o", str(tmp_path / "all"), "--cache-dir", str(tmp_path / "c")
    )
    assert result.returncode == 0, result.stderr
    annotated = load_from_disk(str(tmp_path / "all"))
    assert not any(annotated["atlas_error"])
    assert [len(s) for s in annotated["critical_steps"]] == [
        sum(m["role"] == "assistant" for m in row) for row in annotated["messages"]
    ]


def test_annotate_counts_the_output_rows_with_worker_processes(tmp_path):
    out = tmp_path / "annotated"
    result = atlas_hf(
        "annotate",
        "sample",
        "--oracle",
        "random",
        "--num-proc",
        "2",
        "--batch-size",
        "4",
        "-o",
        str(out),
        "--cache-dir",
        str(tmp_path / "c"),
    )
    assert result.returncode == 0, result.stderr
    annotated = load_from_disk(str(out))
    steps = sum(m["role"] == "assistant" for row in load_sample()["messages"] for m in row)
    critical = sum(len(s) for s in annotated["critical_steps"])
    assert f"{len(annotated)} trajectories, {steps} steps, {critical} critical" in result.stdout
    assert "0 rows with an atlas_error" in result.stdout


def test_annotate_is_resumed_from_the_cache(tmp_path):
    args = ("annotate", "sample", "--oracle", "random", "--cache-dir", str(tmp_path / "c"))
    first = atlas_hf(*args, "-o", str(tmp_path / "a"))
    second = atlas_hf(*args, "-o", str(tmp_path / "b"))
    assert first.returncode == second.returncode == 0
    assert (
        load_from_disk(str(tmp_path / "a"))["critical_steps"] == load_from_disk(str(tmp_path / "b"))["critical_steps"]
    )
    assert "0 from the cache, 13 sent" in first.stdout
    assert "13 from the cache, 0 sent" in second.stdout


def test_with_an_api_key_claude_is_the_default_oracle(tmp_path):
    """`ANTHROPIC_API_KEY` set: the dry run counts tokens, then the run annotates through the Messages API."""
    from anthropic_standin import AnthropicStandIn

    key = "test-anthropic-cli-key-0123456789abcdef"
    with AnthropicStandIn(api_key=key) as api:
        env = {"ANTHROPIC_API_KEY": key, "ANTHROPIC_BASE_URL": api.base_url}
        dry = atlas_hf("annotate", "sample", "--dry-run", "-o", str(tmp_path / "unused"), env=env)
        assert dry.returncode == 0, dry.stderr
        # one count per trajectory, one for the cacheable prefix; nothing generated
        assert "13 trajectories" in dry.stdout and api.paths("POST") == ["/v1/messages/count_tokens"] * 14
        result = atlas_hf(
            "annotate",
            "sample",
            "-o",
            str(tmp_path / "out"),
            "--cache-dir",
            str(tmp_path / "c"),
            "--max-concurrency",
            "2",
            "--timeout",
            "30",
            "--max-retries",
            "1",
            env=env,
        )
        assert result.returncode == 0, result.stderr
        assert api.paths("POST").count("/v1/messages") == 13 and api.max_in_flight <= 2
    annotated = load_from_disk(str(tmp_path / "out"))
    assert not any(annotated["atlas_error"]) and all(annotated["critical_steps"])
    assert all(oracle.startswith("anthropic(model=claude-") for oracle in annotated["atlas_oracle"])
    assert "Usage: tokens" in result.stdout and "cost $" in result.stdout
    files = b"".join(p.read_bytes() for p in tmp_path.rglob("*") if p.is_file())
    assert key not in dry.stdout + dry.stderr + result.stdout + result.stderr and key.encode() not in files


def test_bad_input_fails_with_a_message_naming_it(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"messages": [{"role": "user", "content": "hi"}]}) + "\n")
    result = atlas_hf("annotate", str(bad), "--oracle", "random", "-o", str(tmp_path / "o"))
    assert result.returncode == 1
    assert "error:" in result.stderr and "Row 0" in result.stderr and "Traceback" not in result.stderr


def test_publish_without_anything_is_a_usage_error():
    result = atlas_hf("publish")
    assert result.returncode == 2 and "--dataset" in result.stderr
    result = atlas_hf("publish", "--dataset", "sample")  # pushing, but to which repo?
    assert result.returncode == 2 and "--dataset-repo" in result.stderr and "--local-dir" in result.stderr


@pytest.mark.parametrize(
    "flags, complaint",
    [
        (("--oracle", "random", "--use-batches"), "--use-batches is for --oracle anthropic"),
        (("--oracle", "local", "--dry-run"), "--dry-run estimates what Claude costs"),
        (("--oracle", "all", "--model", "x"), "--model means nothing"),
        (
            ("--oracle", "random", "--timeout", "5"),
            "--timeout, --max-retries and --max-concurrency are for --oracle anthropic or openai",
        ),
    ],
)
def test_flags_an_oracle_cannot_use_are_usage_errors(tmp_path, flags, complaint):
    result = atlas_hf("annotate", "sample", "-o", str(tmp_path / "o"), *flags)
    assert result.returncode == 2 and complaint in result.stderr and not (tmp_path / "o").exists()


def test_eval_oracle_on_unannotated_rows_is_a_one_line_error(tmp_path):
    plain = tmp_path / "plain.jsonl"
    plain.write_text(
        json.dumps({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}) + "\n"
    )
    result = atlas_hf("eval-oracle", str(plain), "sample")
    assert (
        result.returncode == 1 and "no `critical_steps` column" in result.stderr and "Traceback" not in result.stderr
    )


@pytest.mark.slow
def test_demo_runs_the_whole_pipeline(tmp_path):
    """sample -> annotate -> train -> publish, with the embedded SmolLM2 (random oracle: fast)."""
    from huggingface_hub import DatasetCard, ModelCard

    result = atlas_hf("demo", "--oracle", "random", "--max-steps", "2", "--output-dir", str(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert "trajectories            13" in out and "loss on critical tokens" in out
    hub = tmp_path / "hub"
    adapter = json.loads((hub / "adapter" / "adapter_config.json").read_text())
    assert adapter["base_model_name_or_path"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    card = ModelCard.load(hub / "adapter" / "README.md")
    assert card.data.library_name == "peft" and card.data.base_model == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert "critical-steps" in DatasetCard.load(hub / "dataset" / "README.md").data.tags


def test_train_takes_every_trl_flag_and_a_config_file(tmp_path, capsys):
    """`atlas-hf train` parses AtlasSFTConfig and ModelConfig as `trl sft` does: snake_case flags and --config."""
    import torch

    (tmp_path / "train.yaml").write_text("learning_rate: 0.0003\nlora_alpha: 8\nselection_ratio: 0.5\n")
    from atlas_hf.scripts.cli import main

    assert (
        main(
            [
                "train",
                "sample",
                "-o",
                str(tmp_path / "out"),
                "--max_steps",
                "1",
                "--lora_r",
                "4",
                "--config",
                str(tmp_path / "train.yaml"),
                "--step_selection",
                "random",
            ]
        )
        == 0
    )
    adapter = json.loads((tmp_path / "out" / "adapter_config.json").read_text())
    assert adapter["r"] == 4 and adapter["lora_alpha"] == 8
    args = torch.load(tmp_path / "out" / "training_args.bin", weights_only=False)
    assert args.learning_rate == 3e-4 and args.selection_ratio == 0.5 and args.step_selection == "random"
    assert args.max_steps == 1
    capsys.readouterr()
    assert main(["train", "sample", "-o", str(tmp_path / "bad"), "--no_such_flag", "1"]) == 1  # refused, as in trl sft
    assert "no_such_flag" in capsys.readouterr().err and not (tmp_path / "bad").exists()


def test_the_demo_quiets_libraries_for_its_own_run_only():
    """Whatever the process had before (here: bars on), it has again after the demo's quiet block."""
    import warnings

    import datasets
    import transformers
    from datasets.utils.logging import is_progress_bar_enabled

    from atlas_hf.scripts.demo import _quiet_libraries

    before = is_progress_bar_enabled(), transformers.utils.logging.is_progress_bar_enabled()
    datasets.enable_progress_bars()
    transformers.utils.logging.enable_progress_bar()
    try:
        filters = list(warnings.filters)
        with _quiet_libraries():
            assert not is_progress_bar_enabled() and not transformers.utils.logging.is_progress_bar_enabled()
            assert warnings.filters[0][0] == "ignore" and warnings.filters != filters
        assert is_progress_bar_enabled() and transformers.utils.logging.is_progress_bar_enabled()
        assert warnings.filters == filters
    finally:
        if not before[0]:
            datasets.disable_progress_bars()
        if not before[1]:
            transformers.utils.logging.disable_progress_bar()
