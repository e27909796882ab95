"""The recipes, run as users run them: the drop-in scripts of docs/drop-in.md as written, the accelerate
configs through accelerate's own loader, and recipes/sft_atlas.py under `accelerate launch` with two
real processes."""

from __future__ import annotations

import difflib
import itertools
import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from atlas_hf.training.labeller import IGNORE_INDEX, label_trajectory

ROOT = Path(__file__).resolve().parents[1]
DROP_IN = ROOT / "docs" / "drop-in.md"
RECIPE = ROOT / "recipes" / "sft_atlas.py"
CONFIGS = ROOT / "recipes" / "accelerate"

# Four trajectories whose supervised spans differ in length (one long critical turn, three short
# ones), so that averaging per row or per process would give a different loss than averaging per token.
ROWS = [
    {
        "messages": [
            {"role": "user", "content": "Which city hosted the 1936 Summer Olympics, and who was its mayor?"},
            {
                "role": "assistant",
                "content": (
                    "Thought: I need two facts: the host city of the 1936 Summer Olympics, then its mayor "
                    "in 1936. Plan: search the games, read the host city, then search the mayor. "
                    "Action: search[1936 Summer Olympics]"
                ),
            },
            {"role": "user", "content": "Observation: The 1936 Summer Olympics were held in Berlin."},
            {"role": "assistant", "content": "Action: search[Mayor of Berlin 1936]"},
        ],
        "critical_steps": [0],
    },
    {
        "messages": [
            {"role": "user", "content": "Is the Nile longer than the Amazon?"},
            {"role": "assistant", "content": "Action: search[Nile length]"},
            {"role": "user", "content": "Observation: 6,650 km."},
            {"role": "assistant", "content": "Action: search[Amazon length]"},
            {"role": "user", "content": "Observation: 6,400 km."},
            {"role": "assistant", "content": "Finish[yes]"},
        ],
        "critical_steps": [2],
    },
    {
        "messages": [
            {"role": "user", "content": "Put a clean mug on the desk."},
            {"role": "assistant", "content": "go to sink 1"},
            {"role": "user", "content": "You see a mug 2."},
            {"role": "assistant", "content": "take mug 2"},
        ],
        "critical_steps": [0, 1],
    },
    {
        "messages": [
            {"role": "user", "content": "Buy red running shoes under $50."},
            {"role": "assistant", "content": "search[red running shoes]"},
            {"role": "user", "content": "Results: B01 $45, B02 $80."},
            {"role": "assistant", "content": "click[B01]"},
        ],
        "critical_steps": [1],
    },
]


def python_blocks(path: Path) -> dict[str, str]:
    """The doc's Python code blocks by their first-line file name (`# train_atlas.py`)."""
    blocks = re.findall(r"```python\n(.*?)```", path.read_text(), flags=re.S)
    return {block.splitlines()[0].removeprefix("# ").strip(): block for block in blocks}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    """ROWS as a dataset folder that `load_dataset(folder, split="train")` reads."""
    folder = tmp_path_factory.mktemp("trajectories")
    (folder / "train.jsonl").write_text("".join(json.dumps(row) + "\n" for row in ROWS))
    return folder


def per_row_nll(model_dir: Path, tokenizer) -> list[tuple[float, int]]:
    """(sum of the token losses, number of supervised tokens) of each row of ROWS under the saved model,
    computed here with a plain forward and cross-entropy."""
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, attn_implementation="eager")
    model.eval()
    out = []
    for row in ROWS:
        labelled = label_trajectory(tokenizer, row["messages"], row["critical_steps"])
        ids = torch.tensor([labelled.input_ids])
        labels = torch.tensor(labelled.labels[1:])
        with torch.no_grad():
            logits = model(ids).logits[0, :-1].double()
        nll = F.cross_entropy(logits, labels, ignore_index=IGNORE_INDEX, reduction="sum")
        out.append((nll.item(), int((labels != IGNORE_INDEX).sum())))
    return out


def token_mean(rows: list[tuple[float, int]]) -> float:
    return sum(s for s, _ in rows) / sum(n for _, n in rows)


def first_logged_loss(log_history: list[dict]) -> float:
    return next(entry["loss"] for entry in log_history if "loss" in entry)


def lora_b_norm(adapter_dir: Path) -> float:
    tensors = load_file(str(adapter_dir / "adapter_model.safetensors"))
    return sum(t.abs().sum().item() for name, t in tensors.items() if "lora_B" in name)


# --------------------------------------------------------------------------------------- drop-in doc


def test_drop_in_diff_is_the_three_lines_the_doc_shows():
    blocks = python_blocks(DROP_IN)
    before, after = blocks["train_sft.py"].splitlines(), blocks["train_atlas.py"].splitlines()
    changed = [line for line in difflib.ndiff(before[1:], after[1:]) if line[:2] in ("- ", "+ ")]
    diff_block = re.search(r"```diff\n(.*?)```", DROP_IN.read_text(), flags=re.S).group(1)
    shown = [f"{line[0]} {line[1:]}" for line in diff_block.splitlines() if line[:1] in "-+"]
    assert changed == shown
    assert len([line for line in changed if line.startswith("+ ")]) == 3


def apply_doc_diff(source: str, diff: str) -> str:
    """`source` with each hunk of a doc's diff applied: the `-` lines must occur exactly once."""
    for hunk in diff.split("@@\n"):
        lines = hunk.splitlines()
        old = "\n".join(line[1:] for line in lines if line.startswith("-"))
        new = "\n".join(line[1:] for line in lines if line.startswith("+"))
        assert source.count(old) == 1, old
        source = source.replace(old, new)
    return source


def test_trls_own_sft_script_with_the_documented_diff_trains_on_critical_steps(tiny_model_dir, data_dir, tmp_path):
    import trl

    diff = re.findall(r"```diff\n(.*?)```", DROP_IN.read_text(), flags=re.S)[1]
    trl_script = Path(trl.__file__).parent / "scripts" / "sft.py"
    patched = apply_doc_diff(trl_script.read_text(), diff)
    assert len(patched.splitlines()) - len(trl_script.read_text().splitlines()) == 4  # +8 -4
    script = tmp_path / "sft.py"
    script.write_text(patched)
    out = tmp_path / "out"
    command = [
        sys.executable,
        str(script),
        "--model_name_or_path",
        str(tiny_model_dir),
        "--dataset_name",
        str(data_dir),
        "--max_steps",
        "1",
        "--per_device_train_batch_size",
        "2",
        "--use_peft",
        "--lora_r",
        "4",
        "--use_cpu",
        "--report_to",
        "none",
        "--save_strategy",
        "no",
        "--output_dir",
        str(out),
        "--step_selection",
        "critical",
    ]
    env = {**os.environ, "HF_DATASETS_CACHE": str(tmp_path / "datasets-cache")}
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = json.loads((out / "atlas_summary.json").read_text())
    assert summary["step_selection"] == "critical" and summary["rows"] == len(ROWS)
    assert 0 < summary["supervised_tokens"] < summary["total_tokens"]
    assert "critical-steps" in (out / "README.md").read_text()


@pytest.mark.parametrize("script", ["train_atlas.py", "train_atlas_collator.py"])
def test_drop_in_script_runs_and_normalises_per_supervised_token(
    script, tiny_model_dir, data_dir, smol_tokenizer, tmp_path, monkeypatch
):
    """The doc's script, as written, trains on the critical tokens: its first logged loss (one batch
    holding all four rows) is the mean loss over their supervised tokens, computed here independently."""
    out = tmp_path / "out"
    environment = {"MODEL": tiny_model_dir, "DATASET": data_dir, "OUTPUT_DIR": out, "MAX_STEPS": 1}
    for name, value in environment.items():
        monkeypatch.setenv(name, str(value))
    namespace: dict = {"__name__": "__main__"}
    exec(compile(python_blocks(DROP_IN)[script], f"{DROP_IN}:{script}", "exec"), namespace)

    trainer = namespace["trainer"]
    expected = per_row_nll(tiny_model_dir, smol_tokenizer)
    assert first_logged_loss(trainer.state.log_history) == pytest.approx(token_mean(expected), rel=1e-4)
    assert trainer.state.global_step == 1
    assert lora_b_norm(out) > 0  # the saved adapter was trained (LoRA B starts at zero)
    if script == "train_atlas.py":
        summary = trainer.atlas_summary()
        assert summary["rows"] == len(ROWS)
        # label counts include the first token of a row; here it is never supervised
        assert summary["supervised_tokens"] == sum(n for _, n in expected)


# --------------------------------------------------------------------------------------- accelerate configs


@pytest.mark.parametrize(
    "name, distributed_type, extra",
    [
        ("single_gpu.yaml", "NO", {}),
        ("multi_gpu_ddp.yaml", "MULTI_GPU", {}),
        ("fsdp2.yaml", "FSDP", {"fsdp_config": {"fsdp_version": 2}}),
        ("deepspeed_zero3.yaml", "DEEPSPEED", {"deepspeed_config": {"zero_stage": 3}}),
    ],
)
def test_accelerate_configs_load_with_accelerate(name, distributed_type, extra):
    """accelerate's own loader accepts every key (it rejects unknown ones) and reads the intended setup."""
    from accelerate.commands.config.config_args import load_config_from_file

    config = load_config_from_file(str(CONFIGS / name))
    assert config.distributed_type.value == distributed_type
    assert config.mixed_precision == "bf16" and not config.use_cpu
    for section, values in extra.items():
        assert values.items() <= getattr(config, section).items()


def test_readme_launch_lines_name_existing_configs_and_recipe_flags():
    """Every `accelerate launch` line of recipes/README.md names a config that exists, and every flag it
    passes to the recipe is one the recipe's parser knows."""
    sys.path.insert(0, str(RECIPE.parent))
    try:
        from sft_atlas import make_parser
    finally:
        sys.path.remove(str(RECIPE.parent))
    known = {option for action in make_parser()._actions for option in action.option_strings}
    text = (ROOT / "recipes" / "README.md").read_text().replace("\\\n", " ")
    lines = [line for line in text.splitlines() if line.strip().startswith("accelerate launch")]
    assert len(lines) >= 4
    for line in lines:
        config = re.search(r"--config_file (\S+)", line).group(1)
        assert (ROOT / config).is_file(), config
        flags = re.findall(r"(--\w+)", line.split("sft_atlas.py", 1)[1])
        assert flags and set(flags) <= known, set(flags) - known


# --------------------------------------------------------------------------------------- two processes


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_sft_recipe_under_accelerate_two_processes(tiny_model_dir, data_dir, smol_tokenizer, tmp_path):
    """recipes/sft_atlas.py on two CPU processes (gloo): both replicas end with the same adapter, equal
    to the one saved, and the first logged loss is the sum of the token losses over both processes'
    supervised tokens divided by their total, not a mean of per-process or per-row means."""
    out, replicas = tmp_path / "out", tmp_path / "replicas"
    accelerate = Path(sys.executable).parent / "accelerate"
    command = [
        str(accelerate),
        "launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--main_process_port",
        str(free_port()),
        str(RECIPE),
        "--model_name_or_path",
        str(tiny_model_dir),
        "--dataset_name",
        str(data_dir / "train.jsonl"),
        "--use_peft",
        "--lora_dropout",
        "0",
        "--max_steps",
        "3",
        "--per_device_train_batch_size",
        "2",
        "--learning_rate",
        "1e-2",
        "--logging_steps",
        "1",
        "--save_strategy",
        "no",
        "--report_to",
        "none",
        "--output_dir",
        str(out),
        "--replica_dump_dir",
        str(replicas),
    ]
    env = {**os.environ, "HF_DATASETS_CACHE": str(tmp_path / "datasets-cache"), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]

    rank0, rank1 = (load_file(str(replicas / f"rank{rank}.safetensors")) for rank in (0, 1))
    assert rank0.keys() == rank1.keys() and any("lora_B" in k for k in rank0)
    for name in rank0:
        assert torch.equal(rank0[name], rank1[name]), name
    saved = load_file(str(out / "adapter_model.safetensors"))
    assert len(saved) == len(rank0)
    for name, tensor in saved.items():
        replica_name = name.replace(".lora_A.weight", ".lora_A.default.weight").replace(
            ".lora_B.weight", ".lora_B.default.weight"
        )
        assert torch.equal(tensor, rank0[replica_name]), name
    assert lora_b_norm(out) > 0

    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    assert [entry["step"] for entry in history if "loss" in entry] == [1, 2, 3]
    # One global batch (2 processes x 2 rows) holds all four rows, so the first step sees each row once:
    # the tokens counted at step 1 are those of both processes' rows.
    labelled = [label_trajectory(smol_tokenizer, row["messages"], row["critical_steps"]) for row in ROWS]
    assert history[0]["num_tokens"] == sum(len(row.input_ids) for row in labelled)
    rows = per_row_nll(tiny_model_dir, smol_tokenizer)
    expected = token_mean(rows)
    logged = first_logged_loss(history)
    tolerance = 1e-4
    assert logged == pytest.approx(expected, rel=tolerance)
    # The other normalisations miss by over ten times the tolerance, whichever two rows each process got.
    wrong = [sum(s / n for s, n in rows) / len(rows)]  # a mean of per-row means
    for pair in itertools.combinations(range(4), 2):
        other = [i for i in range(4) if i not in pair]
        # a mean of per-process means
        wrong.append((token_mean([rows[i] for i in pair]) + token_mean([rows[i] for i in other])) / 2)
    assert all(abs(w - expected) > 10 * tolerance * expected for w in wrong), (expected, wrong)


@pytest.mark.slow
def test_fsdp2_recipe_on_cpus_refuses_to_train_with_full_replicas(tiny_model_dir, data_dir, tmp_path):
    """`accelerate launch` with fsdp2.yaml on two CPU processes: accelerate sets FSDP up only on GPUs, so
    the run would be DDP with a full replica per process. The trainer says so and stops, before any step."""
    out = tmp_path / "out"
    accelerate = Path(sys.executable).parent / "accelerate"
    command = [
        str(accelerate),
        "launch",
        "--config_file",
        str(CONFIGS / "fsdp2.yaml"),
        "--num_processes",
        "2",
        "--mixed_precision",
        "no",
        "--main_process_port",
        str(free_port()),
        str(RECIPE),
        "--model_name_or_path",
        str(tiny_model_dir),
        "--dataset_name",
        str(data_dir / "train.jsonl"),
        "--use_peft",
        "--max_steps",
        "2",
        "--per_device_train_batch_size",
        "2",
        "--save_strategy",
        "no",
        "--report_to",
        "none",
        "--output_dir",
        str(out),
    ]
    env = {**os.environ, "HF_DATASETS_CACHE": str(tmp_path / "datasets-cache"), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert result.returncode != 0
    assert "DistributedSetupError: The launch asked for FSDP (ACCELERATE_USE_FSDP=true)" in result.stderr
    assert "set this run up as MULTI_CPU with 2 process(es)" in result.stderr
    assert not (out / "adapter_model.safetensors").exists()


def adapter_loss(model_dir: Path, adapter_dir: Path, tokenizer) -> float:
    """The token-mean loss on ROWS of the base model with the saved adapter, reloaded with PEFT."""
    from peft import PeftModel

    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, attn_implementation="eager")
    model = PeftModel.from_pretrained(base, str(adapter_dir)).eval()
    total = count = 0.0
    for row in ROWS:
        labelled = label_trajectory(tokenizer, row["messages"], row["critical_steps"])
        labels = torch.tensor(labelled.labels[1:])
        with torch.no_grad():
            logits = model(torch.tensor([labelled.input_ids])).logits[0, :-1].double()
        total += F.cross_entropy(logits, labels, ignore_index=IGNORE_INDEX, reduction="sum").item()
        count += int((labels != IGNORE_INDEX).sum())
    return total / count


@pytest.mark.slow
def test_deepspeed_zero3_recipe_partitions_and_matches_one_process(tiny_model_dir, data_dir, smol_tokenizer, tmp_path):
    """deepspeed_zero3.yaml on two CPU processes: every parameter is partitioned (each rank holds half of
    it), and the saved adapter, reloaded, has the loss of the same training on one process."""
    pytest.importorskip("deepspeed")
    flags = [
        "--model_name_or_path",
        str(tiny_model_dir),
        "--dataset_name",
        str(data_dir / "train.jsonl"),
        "--use_peft",
        "--lora_dropout",
        "0",
        "--max_steps",
        "3",
        "--learning_rate",
        "1e-2",
        "--save_strategy",
        "no",
        "--report_to",
        "none",
    ]
    env = {**os.environ, "HF_DATASETS_CACHE": str(tmp_path / "datasets-cache"), "OMP_NUM_THREADS": "1"}
    accelerate = Path(sys.executable).parent / "accelerate"
    sharded, single, replicas = tmp_path / "zero3", tmp_path / "one", tmp_path / "replicas"
    launch = [
        str(accelerate),
        "launch",
        "--config_file",
        str(CONFIGS / "deepspeed_zero3.yaml"),
        "--num_processes",
        "2",
        "--mixed_precision",
        "no",
        "--main_process_port",
        str(free_port()),
        str(RECIPE),
        *flags,
        "--per_device_train_batch_size",
        "2",
        "--output_dir",
        str(sharded),
        "--replica_dump_dir",
        str(replicas),
    ]
    result = subprocess.run(launch, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    for rank in (0, 1):
        layout = json.loads((replicas / f"rank{rank}.json").read_text())
        assert layout["parallelism"]["distributed_type"] == "DEEPSPEED" and layout["parallelism"]["num_processes"] == 2
        assert layout["parallelism"]["sharded_parameters"] == layout["parallelism"]["parameters"] > 0
        assert all(p["local_numel"] == -(-p["numel"] // 2) for p in layout["parameters"].values())
    one = [sys.executable, str(RECIPE), *flags, "--per_device_train_batch_size", "4", "--output_dir", str(single)]
    result = subprocess.run(one, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-5000:]
    base = per_row_nll(tiny_model_dir, smol_tokenizer)
    trained = adapter_loss(tiny_model_dir, sharded, smol_tokenizer)
    assert trained < token_mean(base) - 0.1  # it trained
    assert trained == pytest.approx(adapter_loss(tiny_model_dir, single, smol_tokenizer), rel=1e-4)


def test_sft_recipe_takes_a_trl_sft_command_line_with_a_test_split(tiny_model_dir, tmp_path):
    """The command line of `trl sft` (train and test splits, `--eval_strategy steps`) plus the step selection."""
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "train.jsonl").write_text("".join(json.dumps(row) + "\n" for row in ROWS * 2))
    (folder / "test.jsonl").write_text("".join(json.dumps(row) + "\n" for row in ROWS[:2]))
    out = tmp_path / "out"
    command = [
        sys.executable,
        str(RECIPE),
        "--model_name_or_path",
        str(tiny_model_dir),
        "--dataset_name",
        str(folder),
        "--dataset_train_split",
        "train",
        "--dataset_test_split",
        "test",
        "--eval_strategy",
        "steps",
        "--eval_steps",
        "1",
        "--max_steps",
        "2",
        "--per_device_train_batch_size",
        "2",
        "--use_peft",
        "--learning_rate",
        "1e-3",
        "--logging_steps",
        "1",
        "--save_strategy",
        "no",
        "--report_to",
        "none",
        "--output_dir",
        str(out),
        "--step_selection",
        "critical",
    ]
    env = {**os.environ, "HF_DATASETS_CACHE": str(tmp_path / "datasets-cache")}
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    assert [entry["step"] for entry in history if "eval_loss" in entry] == [1, 2]
    bad = subprocess.run(
        [*command[:-2], "--dataset_test_split", "validation"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert bad.returncode != 0 and "validation" in bad.stderr


@pytest.mark.slow
def test_sft_recipe_annotates_through_an_openai_compatible_server(tiny_model_dir, smol_tokenizer, tmp_path):
    """`--annotate openai --annotate_model M --annotate_base_url URL`: the rows are marked by the server's
    answers (the stand-in picks each trajectory's last step) before training on them."""
    from openai_standin import OpenAIStandIn

    rows = [{"messages": row["messages"]} for row in ROWS]  # no marks: the oracle must make them
    (tmp_path / "raw.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    out = tmp_path / "out"
    with OpenAIStandIn(models=("judge",)) as server:
        command = [
            sys.executable,
            str(RECIPE),
            "--model_name_or_path",
            str(tiny_model_dir),
            "--dataset_name",
            str(tmp_path / "raw.jsonl"),
            "--annotate",
            "openai",
            "--annotate_model",
            "judge",
            "--annotate_base_url",
            server.base_url,
            "--use_peft",
            "--max_steps",
            "1",
            "--per_device_train_batch_size",
            "4",
            "--save_strategy",
            "no",
            "--report_to",
            "none",
            "--output_dir",
            str(out),
        ]
        env = {**os.environ, "HF_DATASETS_CACHE": str(tmp_path / "datasets-cache")}
        result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        assert len(server.requests) == len(ROWS)
    summary = json.loads((out / "atlas_summary.json").read_text())
    last_steps = [
        label_trajectory(smol_tokenizer, row["messages"], [sum(m["role"] == "assistant" for m in row["messages"]) - 1])
        for row in ROWS
    ]
    assert summary["rows"] == len(ROWS) and summary["supervised_tokens"] == sum(r.num_supervised for r in last_steps)
