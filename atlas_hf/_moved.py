"""The module paths of 0.6, kept for one release: `import atlas_hf.trainer` still works.

0.7 grouped the flat package by stage. An old path is an alias of its new module (the same module
object, so `isinstance` checks and monkeypatches agree), and importing it warns once with a
`FutureWarning` that names the new path. `atlas_hf.evaluation`, `atlas_hf.hub` and `atlas_hf.training`
were modules and are now packages: their old names resolve through the packages' `__getattr__`.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import warnings
from types import ModuleType

MOVED_MODULES: dict[str, str] = {
    "atlas_hf.oracles.anthropic_client": "atlas_hf.annotation.oracles.anthropic",  # merged back; before its package
    "atlas_hf.trajectory": "atlas_hf.trajectories.normalize",
    "atlas_hf.chat_reader": "atlas_hf.trajectories.chat_reader",
    "atlas_hf.loading": "atlas_hf.trajectories.loading",
    "atlas_hf.schema": "atlas_hf.trajectories.schema",
    "atlas_hf.sample": "atlas_hf.trajectories.sample",
    "atlas_hf.annotate": "atlas_hf.annotation.annotator",
    "atlas_hf.annotation_cache": "atlas_hf.annotation.cache",
    "atlas_hf.annotation_stats": "atlas_hf.annotation.statistics",
    "atlas_hf.agreement": "atlas_hf.annotation.agreement",
    "atlas_hf.oracles": "atlas_hf.annotation.oracles",
    "atlas_hf.selection": "atlas_hf.training.selection",
    "atlas_hf.tokenization": "atlas_hf.training.labeller",
    "atlas_hf.labelling": "atlas_hf.training.dataset_labelling",
    "atlas_hf.chat_template": "atlas_hf.training.chat_template",
    "atlas_hf.turn_spans": "atlas_hf.training.turn_spans",
    "atlas_hf.collator": "atlas_hf.training.collator",
    "atlas_hf.config": "atlas_hf.training.config",
    "atlas_hf.trainer": "atlas_hf.training.trainer",
    "atlas_hf.lm_head": "atlas_hf.training.lm_head",
    "atlas_hf.parallelism": "atlas_hf.training.parallelism",
    "atlas_hf.episode_records": "atlas_hf.evaluation.records",
    "atlas_hf.policy": "atlas_hf.evaluation.policy",
    "atlas_hf.openai_policy": "atlas_hf.evaluation.openai_policy",
    "atlas_hf.openai_client": "atlas_hf._openai",
    "atlas_hf.envs": "atlas_hf.evaluation.envs",
    "atlas_hf.cards": "atlas_hf.hub.cards",
    "atlas_hf.figures": "atlas_hf.hub.figures",
    "atlas_hf.cli": "atlas_hf.scripts.cli",
    "atlas_hf.demo": "atlas_hf.scripts.demo",
}
"""Each 0.6 module path and where it lives now; a moved package's submodules follow it."""


def new_name(old: str) -> str | None:
    """Where the 0.6 module `old` lives now, or None when it did not move.

    Args:
        old (`str`): A dotted module path such as `"atlas_hf.oracles.local"`.

    Returns:
        `str | None`: The module's path now (`"atlas_hf.annotation.oracles.local"`).
    """
    for prefix, target in MOVED_MODULES.items():
        if old == prefix or old.startswith(prefix + "."):
            return target + old[len(prefix) :]
    return None


class _Alias(importlib.abc.Loader):
    def __init__(self, target: str) -> None:
        self.target = target
        self.old = ""
        self.spec: importlib.machinery.ModuleSpec | None = None

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        self.old = spec.name
        module = importlib.import_module(self.target)
        self.spec = module.__spec__
        return module

    def exec_module(self, module: ModuleType) -> None:
        module.__spec__ = self.spec  # the import system set the alias's spec on the module; restore its own
        warnings.warn(  # stacklevel 2 is the importing line: `warnings` skips the import system's frames
            f"{self.old} moved to {self.target}; the old path goes in the next release.", FutureWarning, stacklevel=2
        )


class _MovedModuleFinder(importlib.abc.MetaPathFinder):
    def find_spec(
        self, fullname: str, path: object = None, target: object = None
    ) -> importlib.machinery.ModuleSpec | None:
        moved = new_name(fullname) if fullname.startswith("atlas_hf.") else None
        if moved is None:
            return None
        return importlib.machinery.ModuleSpec(fullname, _Alias(moved))


def install() -> None:
    """Put the finder of the old paths first on `sys.meta_path` (once), ahead of the path finder that
    would otherwise load a moved package's submodule a second time under its old name."""
    if not any(isinstance(finder, _MovedModuleFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, _MovedModuleFinder())
