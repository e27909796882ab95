"""The dataset card and the adapter model card, rendered from templates with huggingface_hub.

Both cards are `huggingface_hub` cards built with `DatasetCard.from_template` /
`ModelCard.from_template` from the Jinja templates in `atlas_hf/hub/card_templates/`, their YAML header a
`DatasetCardData` / `ModelCardData`. `hub.py` publishes them; `AtlasSFTTrainer.save_model` writes the
adapter card beside the adapter.
"""

from __future__ import annotations

import json
import logging
import re
from importlib import resources
from pathlib import Path
from typing import Any, Mapping, Sequence

from huggingface_hub import DatasetCard, DatasetCardData, EvalResult, ModelCard, ModelCardData, constants
from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id

from atlas_hf.annotation.oracles.registry import LLM_CARD_TEXT, oracle_info
from atlas_hf.training.summary import read_training_summary
from atlas_hf.errors import AtlasFileNotFoundError
from atlas_hf.trajectories.schema import (
    CRITICAL_CATEGORIES,
    CRITICAL_REASONS,
    CRITICAL_STEPS,
    ERROR,
    MESSAGES,
    ORACLE,
    PLAN,
    parse_identity,
    parse_oracle_column,
)

__all__ = ["CITATION", "adapter_card", "dataset_card", "eval_results", "redact", "size_category"]

logger = logging.getLogger(__name__)

DATASET_TAGS = ("atlas", "agent", "critical-steps", "trl")
ADAPTER_TAGS = ("atlas", "trl", "peft", "lora", "agent", "critical-steps")
FIGURE_PATH = "assets/atlas_stats.png"
"""What `AtlasSFTTrainer.save_model` writes beside the adapter: the training summary its card shows."""
PAPER = "ATLaS: Agent Tuning via Learning Critical Steps (Chen et al., ACL Findings 2025)"
CITATION = """@inproceedings{chen2025atlas,
    title     = {{ATLaS: Agent Tuning via Learning Critical Steps}},
    author    = {Zhixun Chen and Ming Li and Yuxuan Huang and Yali Du and Meng Fang and Tianyi Zhou},
    booktitle = {Findings of the Association for Computational Linguistics: ACL 2025},
    year      = 2025,
    pages     = {25334--25349},
    doi       = {10.18653/v1/2025.findings-acl.1299},
}"""
"""The paper's BibTeX entry, for model cards (and TRL's citation section)."""

_TEMPLATES = resources.files("atlas_hf.hub") / "card_templates"
_SECRET_RE = re.compile(r"\b(?:hf_[A-Za-z0-9]{30,}|sk-ant-[A-Za-z0-9_\-]{20,})")
_COLUMNS = {
    MESSAGES: "the full trajectory as OpenAI-style chat messages (the model's input)",
    CRITICAL_STEPS: "0-based indices over the assistant turns that carry the loss",
    CRITICAL_CATEGORIES: "the category of each critical step",
    CRITICAL_REASONS: "the oracle's one-line reason for each critical step",
    PLAN: "the oracle's high-level plan of the trajectory",
    ERROR: "why the row could not be annotated (empty when it was)",
    ORACLE: "which oracle annotated the row, and the ratio cap it was given",
}
_BASE_LICENSES = {"HuggingFaceTB/SmolLM2-135M-Instruct": "apache-2.0"}  # the embedded default model's
_SUMMARY_LABELS = {
    "step_selection": "Step selection",
    "selection_ratio": "Selection ratio",
    "epochs": "Epochs",
    "optimizer_steps": "Optimizer steps",
    "supervised_tokens": "Supervised tokens",
    "final_loss": "Final training loss",
    "learning_rate": "Learning rate",
}


def redact(text: str, secrets: Sequence[str | None] = ()) -> str:
    """`text` with the given secrets, and anything shaped like a Hub or Anthropic key, replaced by `[redacted]`.

    Args:
        text (`str`): Any text bound for a card, a log line or an exception.
        secrets (`Sequence[str]`): Exact strings to remove (a token in use).

    Returns:
        `str`: The text without them.
    """
    for secret in secrets:
        if secret:
            text = text.replace(secret, "[redacted]")
    return _SECRET_RE.sub("[redacted]", text)


def size_category(rows: int) -> str:
    """The Hub's `size_categories` value for `rows` examples, from the list `datasets` ships.

    Args:
        rows (`int`): The number of examples.

    Returns:
        `str`: e.g. `"n<1K"`, `"1K<n<10K"`, `"1M<n<10M"`.

    >>> size_category(999), size_category(2_500_000)
    ('n<1K', '1M<n<10M')
    """
    names = json.loads((resources.files("datasets.utils.resources") / "size_categories.json").read_text())
    scale = {"K": 10**3, "M": 10**6, "B": 10**9, "T": 10**12}
    for name in names:
        bound = re.search(r"n<(\d+)([KMBT])$", name)
        if bound and rows < int(bound[1]) * scale[bound[2]]:
            return name
    return names[-1]


def provenance(
    oracle: Any, prompt_version: str | None, max_ratio: float | None, column_oracles: Mapping[str, int]
) -> tuple[dict[str, str], str]:
    """The card's "how it was made" table and sentence.

    Args:
        oracle (`Oracle`, `str` or `None`): The oracle or its identity; None reads `column_oracles`.
        prompt_version (`str`, *optional*): The prompt version, if not recorded elsewhere.
        max_ratio (`float`, *optional*): The ratio cap, if not recorded in the `atlas_oracle` values.
        column_oracles (`Mapping[str, int]`): The `atlas_oracle` values of the rows and their counts
            (e.g. `local(model=..., prompt=local-yes-no-v2, ..., max_ratio=0.3)`: they name the model, prompt and cap).

    Returns:
        `tuple[dict[str, str], str]`: The table (oracle, model, prompt version, cap; "not recorded"
        where unknown; secrets redacted) and the sentence on how the steps were chosen.
    """
    name = model = None
    if isinstance(oracle, str):
        name = oracle
    elif oracle is not None:
        name = getattr(oracle, "identity", None) or type(oracle).__name__
        model = getattr(oracle, "model", None) or getattr(oracle, "model_name", None)
        prompt_version = prompt_version or getattr(oracle, "prompt_version", None)
    elif len(column_oracles) == 1:
        name = next(iter(column_oracles))
    shown, recorded_ratio = parse_oracle_column(str(name)) if name else (None, None)
    identity = parse_identity(shown)
    if name is None and column_oracles:  # several oracles: each named with its rows
        shown = ", ".join(f"{parse_oracle_column(v)[0]} ({column_oracles[v]} rows)" for v in sorted(column_oracles))
    model = model or (identity.get("model") if identity else None)
    prompt_version = prompt_version or (identity.get("prompt") if identity else None)
    max_ratio = max_ratio if max_ratio is not None else recorded_ratio
    table = {
        "Oracle": redact(shown) if shown else "not recorded",
        "Oracle model": redact(str(model)) if model else "not recorded",
        "Prompt version": str(prompt_version) if prompt_version else "not recorded",
        "Ratio cap": f"{max_ratio:.0%} of each trajectory's steps" if max_ratio is not None else "not recorded",
    }
    info = oracle_info(identity.name) if identity else None
    how = info.card_text if info is not None else LLM_CARD_TEXT
    return table, how


def dataset_card(
    repo_id: str,
    metadata: Mapping[str, Any],
    stats: Mapping[str, Any],
    columns: Sequence[str],
    *,
    oracle: Any = None,
    prompt_version: str | None = None,
    max_ratio: float | None = None,
    source_datasets: Sequence[str] | None = None,
    license: str = "apache-2.0",
    language: str | Sequence[str] = "en",
    figure: bool = True,
) -> DatasetCard:
    """The dataset card of an annotated dataset.

    Args:
        repo_id (`str`): The dataset repo, for the loading example.
        metadata (`Mapping`): What `push_to_hub` wrote (`dataset_info`, `configs`); kept, the ATLaS
            fields set on top.
        stats (`Mapping`): `annotation_statistics(dataset)`.
        columns (`Sequence[str]`): The dataset's columns, described in the card.
        oracle (`str` or `Oracle`, *optional*): Who chose the steps (default: the `atlas_oracle` column).
        prompt_version (`str`, *optional*): The selector prompt's version.
        max_ratio (`float`, *optional*): The ratio cap (default: the one the `atlas_oracle` column records).
        source_datasets (`Sequence[str]`, *optional*): The Hub datasets the trajectories come from.
        license (`str`): The card's license.
        language (`str` or `Sequence[str]`): The card's languages.
        figure (`bool`): Link the statistics figure at `FIGURE_PATH`.

    Returns:
        `DatasetCard`: The card, its metadata a `DatasetCardData`.
    """
    table, how = provenance(oracle, prompt_version, max_ratio, stats["oracles"])
    meta = dict(metadata)
    meta.update(
        license=license,
        language=[language] if isinstance(language, str) else list(language),
        task_categories=["text-generation"],
        size_categories=[size_category(stats["rows"])],
        pretty_name=meta.get("pretty_name") or f"ATLaS critical steps: {repo_id.split('/')[-1]}",
        tags=list(dict.fromkeys([*(meta.get("tags") or []), *DATASET_TAGS])),
    )
    if source_datasets:
        meta["source_datasets"] = list(source_datasets)
    card = DatasetCard.from_template(
        DatasetCardData(**meta),
        template_path=str(_TEMPLATES / "dataset_card.md"),
        paper=PAPER,
        how_made=how,
        provenance=table,
        stats=stats,
        repo_id=repo_id,
        figure_path=FIGURE_PATH if figure else None,
        split_rows=", ".join(f"{name}: {n}" for name, n in stats["rows_per_split"].items()),
        columns=[(c, _COLUMNS.get(c, "")) for c in columns],
    )
    return DatasetCard(redact(str(card)))


def hub_model_id(name: str | None) -> str | None:
    """`name` if it is a Hub model id (`org/name`, and not a folder on this machine), else `None`."""
    if not name or Path(name).exists():
        return None
    try:
        validate_repo_id(name)
    except HFValidationError:
        return None
    return name


def adapter_card(
    adapter_dir: str | Path,
    *,
    base_model: str | None = None,
    dataset_repo_id: str | None = None,
    training_summary: Mapping[str, Any] | None = None,
    repo_id: str | None = None,
    evaluation: Any = None,
    tags: Sequence[str] | None = None,
    license: str | None = None,
) -> ModelCard:
    """The model card of a PEFT adapter folder, the same whether it is published or saved by the trainer.

    PEFT's metadata is kept (`library_name: peft`, `base_model` from `adapter_config.json` when it is a
    Hub id), with the ATLaS tags and `tags`, `datasets`, the training summary and rollout results.

    Args:
        adapter_dir (`str` or `Path`): The folder `PeftModel.save_pretrained` (or `trainer.save_model`) wrote.
        base_model (`str`, *optional*): The base model's Hub id (default: the adapter config's).
        dataset_repo_id (`str`, *optional*): The training dataset's repo, linked from the card.
        training_summary (`Mapping`, *optional*): `trainer.atlas_summary()` (default: the folder's
            `atlas_summary.json`, else its `trainer_state.json`).
        repo_id (`str`, *optional*): The adapter's repo id, the card's title (default: the folder's name).
        evaluation (`EvaluationReport` or `dict`, *optional*): Rollout results for `model-index` (default:
            the folder's `atlas_eval.json`, written by `atlas-hf eval --adapter`).
        tags (`Sequence[str]`, *optional*): Tags added to the card's own and the ATLaS ones.
        license (`str`, *optional*): The card's license (default: the existing card's, else the base
            model's where it is known, as for the embedded SmolLM2; else none is written).

    Returns:
        `ModelCard`: The card, its metadata a `ModelCardData`.

    Raises:
        `FileNotFoundError`: The folder has no `adapter_config.json`.
    """
    folder = Path(adapter_dir)
    config_path = folder / "adapter_config.json"
    if not config_path.is_file():
        raise AtlasFileNotFoundError(
            f"{folder} has no adapter_config.json, so it is not a PEFT adapter folder. Pass the folder that "
            "`PeftModel.save_pretrained` (or `trainer.save_model`) wrote, or the trainer itself."
        )
    adapter_config = json.loads(config_path.read_text(encoding="utf-8"))
    base_model = base_model or adapter_config.get("base_model_name_or_path")
    meta: dict[str, Any] = {}
    if (folder / "README.md").is_file():
        meta = ModelCard.load(folder / "README.md", ignore_metadata_errors=True).data.to_dict()
    hub_base = hub_model_id(base_model)
    if base_model and hub_base is None:
        logger.warning(
            "base_model %r is a local path, not a Hub model id, so the card's `base_model` is left "
            "out; pass base_model='org/name' to publish_adapter to set it.",
            Path(base_model).name,
        )
    meta.pop("base_model", None)
    kept = [t for t in meta.get("tags") or [] if not t.startswith("base_model:")]  # PEFT's, naming a local path
    meta.update(
        library_name="peft",
        pipeline_tag="text-generation",
        tags=list(dict.fromkeys([*kept, *ADAPTER_TAGS, *(tags or [])])),
    )
    license = license or meta.get("license") or _BASE_LICENSES.get(hub_base or "")
    if license:
        meta["license"] = license
    else:
        logger.info(
            "No license on the card of %s: pass license= (the base model's license applies to the adapter).",
            folder.name,
        )
    if hub_base:
        meta["base_model"] = hub_base
    if dataset_repo_id:
        meta["datasets"] = [dataset_repo_id]
    evaluation = _evaluation_dict(evaluation, folder)
    name = repo_id or folder.name
    if evaluation:
        meta.pop("model-index", None)
        meta["model_name"] = name
        meta["eval_results"] = eval_results(evaluation)
    summary = dict(training_summary) if training_summary else read_training_summary(folder)
    targets = adapter_config.get("target_modules")
    peft_type = adapter_config.get("peft_type", "PEFT")
    card = ModelCard.from_template(
        ModelCardData(**meta),
        template_path=str(_TEMPLATES / "adapter_card.md"),
        name=name,
        paper=PAPER,
        peft_type={"LORA": "LoRA"}.get(peft_type, peft_type),
        base_model=hub_base,
        dataset_repo_id=dataset_repo_id,
        endpoint=constants.ENDPOINT,
        rank=adapter_config.get("r"),
        alpha=adapter_config.get("lora_alpha"),
        targets=", ".join(sorted(targets)) if isinstance(targets, list) else targets,
        evaluation=evaluation,
        summary=[
            (_SUMMARY_LABELS.get(k, k.replace("_", " ").capitalize()), f"{v:.4g}" if isinstance(v, float) else v)
            for k, v in summary.items()
            if v is not None
        ],
        citation=CITATION,
    )
    return ModelCard(redact(str(card)))


def _evaluation_dict(evaluation: Any, folder: Path) -> dict[str, Any] | None:
    from atlas_hf.evaluation.evaluator import EVAL_RESULTS_FILE

    if evaluation is None and (folder / EVAL_RESULTS_FILE).is_file():
        evaluation = json.loads((folder / EVAL_RESULTS_FILE).read_text(encoding="utf-8"))
    if evaluation is not None and hasattr(evaluation, "to_dict"):
        evaluation = evaluation.to_dict()
    return dict(evaluation) if evaluation else None


def eval_results(evaluation: Mapping[str, Any]) -> list[EvalResult]:
    """Rollout results as Hub `model-index` entries: per environment, the success rate and the mean
    progress score, in percent.

    Args:
        evaluation (`Mapping`): An `EvaluationReport.to_dict()`.

    Returns:
        `list[EvalResult]`: For `ModelCardData(eval_results=...)`; the split names the evaluation's seeds.
    """
    config = evaluation.get("config") or {}
    first, episodes = config.get("seed", 0), config.get("episodes")
    split = f"seeds {first}-{first + episodes - 1}" if episodes else f"seeds from {first}"
    results = []
    for env, result in evaluation["envs"].items():
        common = dict(
            task_type="reinforcement-learning",
            task_name="Agent rollouts",
            dataset_type=env,
            dataset_name=env,
            dataset_split=split,
        )
        results.append(
            EvalResult(
                **common,
                metric_type="success_rate",
                metric_name="Success rate (%)",
                metric_value=round(100 * float(result["success_rate"]), 2),
            )
        )
        if "mean_score" in result:  # reports written before 0.6 have success only
            results.append(
                EvalResult(
                    **common,
                    metric_type="progress_score",
                    metric_name="Progress score (%)",
                    metric_value=round(100 * float(result["mean_score"]), 2),
                )
            )
    return results
