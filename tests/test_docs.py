"""docs/quickstart.md works when pasted: its Python blocks run, in order, in one namespace."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"


def blocks(page: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", (DOCS / page).read_text(), flags=re.S)


@pytest.mark.slow
def test_quickstart_python_blocks_run_as_pasted(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    code = blocks("quickstart.md", "python")
    assert len(code) >= 4
    for block in code:
        exec(compile(block, "quickstart.md", "exec"), namespace)
    out = capsys.readouterr().out
    assert "critical_steps" in out or "[" in out
    assert namespace["custom"][0]["critical_steps"] == [0]
    assert len(namespace["annotated"]) == len(namespace["dataset"])
    summary = namespace["trainer"].atlas_summary()
    assert summary["supervised_tokens"] > 0 and summary["final_loss"] is not None
    assert (tmp_path / "outputs" / "quickstart" / "adapter_model.safetensors").exists()
    assert (tmp_path / "outputs" / "hub" / "dataset" / "README.md").exists()
    assert (tmp_path / "outputs" / "hub" / "adapter" / "README.md").exists()


@pytest.mark.slow
def test_quickstart_command_lines_run_as_pasted(tmp_path):
    bash = [b for b in blocks("quickstart.md", "bash") if b.lstrip().startswith("atlas-hf")]
    assert bash
    lines = [line for line in bash[0].splitlines() if line.strip()]
    for line in lines:
        args = shlex.split(line)
        result = subprocess.run(
            [sys.executable, "-m", "atlas_hf.scripts.cli", *args[1:]],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert result.returncode == 0, (line, result.stderr[-2000:])
    assert (tmp_path / "outputs" / "adapter" / "adapter_config.json").exists()
    assert (tmp_path / "outputs" / "hub" / "adapter" / "README.md").exists()


def test_evaluation_page_environment_block_runs_as_pasted():
    pytest.importorskip("minigrid")
    namespace: dict = {}
    exec(compile(blocks("evaluation.md", "python")[0], "evaluation.md", "exec"), namespace)
    assert "babyai/GoToLocal" in namespace["list_envs"]()
    assert namespace["first"].startswith("You act in a grid world. Mission: ")
    result = namespace["result"]
    assert (
        not result.info["invalid_action"] and not result.done and result.observation.startswith("You did: turn left.")
    )


def test_every_name_the_api_page_lists_imports():
    """The first column of every table in docs/api.md names things that import from where the row says:
    the module it names (`atlas_hf.training.run`, or `atlas_hf.hub.cards` for `atlas_hf.hub.cards.dataset_card`),
    else `atlas_hf` itself, or Python's built-in exceptions they derive from."""
    import builtins
    import importlib

    import atlas_hf

    def module_of(path: str) -> object | None:
        for candidate in (path, path.rpartition(".")[0]):  # a module, or a module's function spelt in full
            try:
                return importlib.import_module(candidate)
            except ModuleNotFoundError:
                continue
        return None

    def found(name: str, modules: list[str]) -> bool:
        if modules:
            return any(hasattr(module_of(path), name) for path in modules)
        return hasattr(atlas_hf, name) or hasattr(builtins, name)

    rows = [
        line
        for line in (DOCS / "api.md").read_text().splitlines()
        if line.startswith("| ") and not line.startswith(("| name", "|---"))
    ]
    assert len(rows) > 40
    missing = []
    for row in rows:
        first = row.split(" | ")[0]
        modules = re.findall(r"atlas_hf(?:\.\w+)+", first)
        for name in set(re.findall(r"(?<![\w.])([A-Za-z_]\w*)\(", first) + re.findall(r"`([A-Za-z_]\w*)`", first)):
            if not found(name, modules):
                missing.append(f"{name} ({first.strip()[:60]})")
    assert missing == []
