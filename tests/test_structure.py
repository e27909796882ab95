"""The package's shape: one library under both front ends, names that load lazily, an oracle registry."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import atlas_hf
from atlas_hf.annotation.oracles import build_oracle, list_oracles, register_oracle

ROOT = Path(__file__).resolve().parents[1]


def _imported_modules(path: Path) -> set[str]:
    modules: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            modules.add(node.module)
        elif isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
    return modules


def test_the_recipe_is_a_launcher_of_the_one_training_script():
    recipe = ROOT / "recipes" / "sft_atlas.py"
    assert {m for m in _imported_modules(recipe) if m.startswith("atlas_hf")} == {"atlas_hf.scripts.sft"}
    for front_end in (ROOT / "atlas_hf" / "scripts" / "cli.py", ROOT / "recipes" / "babyai" / "reproduce_table.py"):
        assert "AtlasSFTTrainer(" not in front_end.read_text(), f"{front_end} builds its own trainer"


def test_front_ends_never_import_each_other():
    recipes = sorted((ROOT / "recipes").rglob("*.py"))
    assert recipes
    for recipe in recipes:
        assert not {m for m in _imported_modules(recipe) if m.startswith("atlas_hf.scripts.cli")}, recipe
    for script in (ROOT / "atlas_hf" / "scripts").glob("*.py"):
        assert not {m for m in _imported_modules(script) if m.startswith("recipes")}, script


# what each stage may import (besides itself, `errors`, `models` and the private top-level helpers)
ALLOWED = {
    "trajectories": set(),
    "annotation": {"trajectories"},
    "training": {"trajectories", "hub"},  # hub: the trainer writes its card at save, as TRL's Trainer does
    "evaluation": {"trajectories", "training"},  # training: rollouts render as training did
    "hub": {"trajectories", "annotation", "training", "evaluation"},
    "scripts": {"trajectories", "annotation", "training", "evaluation", "hub"},
}


def test_each_stage_imports_only_the_stages_above_it():
    shared = {"errors", "models", "_openai", "_lazy", "_moved", "_upstream"}
    broken = []
    for stage, allowed in ALLOWED.items():
        for path in sorted((ROOT / "atlas_hf" / stage).rglob("*.py")):
            for module in _imported_modules(path):
                parts = module.split(".")
                if parts[0] != "atlas_hf" or len(parts) == 1 or parts[1] in shared or parts[1] == stage:
                    continue
                if parts[1] not in allowed:
                    broken.append(f"{path.relative_to(ROOT)} imports {module}")
    assert broken == []
    top_level = {p.stem for p in (ROOT / "atlas_hf").glob("*.py")} - {"__init__"}
    assert top_level == shared, "a new top-level module: put it in its stage"


def test_old_module_paths_are_the_new_modules_with_a_future_warning():
    code = (
        "import warnings, importlib, sys\n"
        "warnings.simplefilter('error')\n"
        "import atlas_hf\n"
        "from atlas_hf._moved import MOVED_MODULES, new_name\n"
        "for old, new in MOVED_MODULES.items():\n"
        "    sys.modules.pop(old, None)  # imported above as a parent of an old path\n"
        "    with warnings.catch_warnings(record=True) as caught:\n"
        "        warnings.simplefilter('always')\n"
        "        module = importlib.import_module(old)\n"
        "    assert module is importlib.import_module(new), old\n"
        "    assert module.__name__ == new and module.__spec__.name == new, old\n"
        "    assert any(w.category is FutureWarning and str(w.message).startswith(f'{old} moved to {new};')\n"
        "               for w in caught), (old, [str(w.message) for w in caught])\n"
        "warnings.simplefilter('ignore')\n"
        "import atlas_hf.envs.babyai as a, atlas_hf.evaluation.envs.babyai as b\n"
        "warnings.simplefilter('error')\n"
        "assert a is b and new_name('atlas_hf.oracles.local') == 'atlas_hf.annotation.oracles.local'\n"
        "from atlas_hf.training import train\n"  # what 0.6's module atlas_hf.training held, now its package's
        "from atlas_hf.hub import publish\n"
        "assert callable(publish) and callable(train)\n"
        "try:\n"
        "    from atlas_hf.evaluation import EVAL_RESULTS_FILE\n"
        "    raise SystemExit('no warning for a name of the replaced module')\n"
        "except FutureWarning as w:\n"
        "    assert 'atlas_hf.evaluation.evaluator.EVAL_RESULTS_FILE' in str(w)\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_moved_modules_keep_their_old_file_layout_nowhere():
    from atlas_hf._moved import MOVED_MODULES

    for old in MOVED_MODULES:
        stale = ROOT / (old.replace(".", "/") + ".py")
        assert not stale.exists() and not stale.with_suffix("").exists(), f"{stale} would shadow the alias"


def test_type_checking_names_are_the_lazy_exports():
    tree = ast.parse((ROOT / "atlas_hf" / "__init__.py").read_text())
    block = next(n for n in tree.body if isinstance(n, ast.If) and getattr(n.test, "id", "") == "TYPE_CHECKING")
    seen = {(node.module, alias.name) for node in block.body for alias in node.names}
    assert seen == {(module, name) for name, module in atlas_hf._EXPORTS.items()}
    for name in atlas_hf.__all__:  # every export resolves
        assert getattr(atlas_hf, name) is not None


def test_a_baseline_oracle_loads_neither_the_anthropic_sdk_nor_torch():
    code = (
        "import sys, atlas_hf; atlas_hf.RandomOracle; from atlas_hf.annotation.oracles import AllStepsOracle; "
        "print(sorted(m for m in ('anthropic', 'torch', 'trl') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_oracle_registry_builds_by_name_and_takes_plugins():
    assert list_oracles()[:6] == ["anthropic", "openai", "local", "random", "all", "perplexity"]
    assert build_oracle("random", seed=7).identity == "random(seed=7)"  # options reach the class
    with pytest.raises(ValueError, match="Unknown oracle 'nope'; choose one of anthropic, openai, local"):
        build_oracle("nope")
    everything = build_oracle("all")
    register_oracle("test-everything", lambda model=None, seed=0, **options: everything)
    try:
        assert build_oracle("test-everything") is everything
        assert "test-everything" in list_oracles()
        with pytest.raises(ValueError, match="already registered"):
            register_oracle("test-everything", lambda **kw: None)
        from atlas_hf.scripts.cli import build_parser

        args = build_parser().parse_args(["annotate", "sample", "-o", "x", "--oracle", "test-everything"])
        assert args.oracle == "test-everything"  # the CLI offers what the registry holds
    finally:
        from atlas_hf.annotation.oracles import registry

        registry._REGISTRY.pop("test-everything", None)


def _undocumented() -> list[str]:
    """Public functions and classes of atlas_hf whose docstrings do not say what they take and return.

    A function of two or more parameters needs `Args:` (and `Returns:` when it returns something);
    a class that takes arguments needs `Args:`, `Attributes:` or TRL's `Parameters:`. A method that
    overrides a documented base method (TRL's, the `Oracle` protocol's) inherits its documentation.
    """
    import importlib
    import inspect
    import pkgutil

    found = []
    for info in pkgutil.walk_packages(atlas_hf.__path__, "atlas_hf."):
        module = importlib.import_module(info.name)
        for name, obj in vars(module).items():
            if name.startswith("_") or getattr(obj, "__module__", None) != module.__name__:
                continue
            if inspect.isclass(obj):
                if getattr(obj, "_is_protocol", False):
                    continue
                try:
                    params = [
                        p
                        for p in inspect.signature(obj).parameters.values()
                        if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
                    ]
                except ValueError:  # exceptions deriving from built-ins: no Python signature
                    params = []
                if params and not any(h in (obj.__doc__ or "") for h in ("Args:", "Attributes:", "Parameters:")):
                    found.append(f"{module.__name__}.{name}")
                inherited = {m for base in obj.__mro__[1:] for m in vars(base)}
                functions = [
                    (f"{name}.{m}", f)
                    for m, f in vars(obj).items()
                    if inspect.isfunction(f) and not m.startswith("_") and m not in inherited
                ]
            elif inspect.isfunction(obj):
                functions = [(name, obj)]
            else:
                continue
            for qualname, function in functions:
                signature = inspect.signature(function)
                params = [p for p in signature.parameters if p not in ("self", "cls")]
                doc = function.__doc__ or ""
                returns = signature.return_annotation not in (inspect.Signature.empty, None, "None")
                if not doc or (len(params) >= 2 and ("Args:" not in doc or (returns and "Returns:" not in doc))):
                    found.append(f"{module.__name__}.{qualname}")
    return found


def test_every_public_function_and_class_documents_what_it_takes():
    assert _undocumented() == []
