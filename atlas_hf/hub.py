"""Publish annotated datasets and trained adapters to the Hugging Face Hub, with their cards.

`publish_dataset` pushes the rows with `datasets`' own `push_to_hub` (Parquet through LFS), then
commits a dataset card (YAML the Hub validates, statistics, a figure) on top of the metadata that
`push_to_hub` wrote. `publish_adapter` uploads a PEFT adapter folder with `huggingface_hub`
(`PeftModel.push_to_hub` would replace PEFT's card) and a model card that keeps `library_name: peft`
and `base_model`. Both can write the same layout into a local folder instead (`local_dir=`).

Tokens resolve as `huggingface_hub` does (argument, `HF_TOKEN`, the login cache) and never reach a
card, a log line or an exception message.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import re
import shutil
import struct
import tempfile
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Mapping, Sequence

from huggingface_hub import (
    CommitOperationAdd,
    DatasetCard,
    DatasetCardData,
    EvalResult,
    HfApi,
    ModelCard,
    get_token,
)
from huggingface_hub.errors import HfHubHTTPError

from atlas_hf.annotate import annotation_statistics, dataset_splits
from atlas_hf.errors import HubPublishError
from atlas_hf.oracles.base import CATEGORIES, Oracle

if TYPE_CHECKING:
    from datasets import Dataset, DatasetDict
    from transformers import Trainer

__all__ = ["HubPublishError", "adapter_card", "publish_adapter", "publish_dataset"]

logger = logging.getLogger(__name__)

DATASET_TAGS = ("atlas", "agent", "critical-steps", "trl")
ADAPTER_TAGS = ("atlas", "trl", "peft", "lora", "agent", "critical-steps")
FIGURE_PATH = "assets/atlas_stats.png"
_PAPER = "ATLaS: Agent Tuning via Learning Critical Steps (Chen et al., ACL Findings 2025)"
CITATION = """@inproceedings{chen2025atlas,
    title     = {{ATLaS: Agent Tuning via Learning Critical Steps}},
    author    = {Zhixun Chen and Ming Li and Yuxuan Huang and Yali Du and Meng Fang and Tianyi Zhou},
    booktitle = {Findings of the Association for Computational Linguistics: ACL 2025},
    year      = 2025,
    pages     = {25334--25349},
    doi       = {10.18653/v1/2025.findings-acl.1299},
}"""
"""The paper's BibTeX entry, for model cards (and TRL's citation section)."""
_SECRET_RE = re.compile(r"\b(?:hf_[A-Za-z0-9]{30,}|sk-ant-[A-Za-z0-9_\-]{20,})")
_IDENTITY_FIELD = re.compile(r"(?:^|/)(model|prompt)=([^/\s,]+)")
_REPO_ID_RE = re.compile(r"^[A-Za-z0-9][\w.\-]*(/[\w.\-]+)?$")


# --------------------------------------------------------------------------- errors and secrets


def _scrub(text: str, secrets: Sequence[str | None] = ()) -> str:
    """`text` with the given secrets and anything shaped like an HF or Anthropic key removed."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "[redacted]")
    return _SECRET_RE.sub("[redacted]", text)


_FIXES = {
    401: "the Hub did not accept the token. Pass a valid write token as `token=`, set HF_TOKEN, "
    "or run `hf auth login`.",
    403: "the token may not write to this namespace. Use a token with write access to it, or a "
    "repo_id under your own user name.",
    404: "the repository or revision was not found. Check the repo_id and that the token can see it.",
    409: "a conflicting operation is in progress on this repository. Retry in a moment.",
    412: "the repository changed while publishing. Retry.",
    429: "the Hub is rate-limiting requests. Wait a minute and retry.",
}


@contextlib.contextmanager
def _explained(what: str, repo_id: str, token: str | None) -> Iterator[None]:
    """Re-raise Hub failures as `HubPublishError` naming the step and the fix, with secrets removed."""
    try:
        yield
    except HfHubHTTPError as err:
        status = err.response.status_code if err.response is not None else None
        fix = _FIXES.get(status or 0, "the Hub answered with a server error. Retry later; if it persists, "
                                       "check https://status.huggingface.co.")
        detail = _scrub(str(err.server_message or "").strip(), [token, get_token()])
        message = f"Could not {what} '{repo_id}' (HTTP {status}): {fix}"
        if detail:
            message += f" Server said: {detail}"
        if getattr(err, "request_id", None):
            message += f" (request id {err.request_id})"
        raise HubPublishError(message) from None
    except ValueError as err:  # huggingface_hub reports a README rejected by the Hub's validator this way
        if "metadata" not in str(err).lower():
            raise
        detail = _scrub(str(err), [token, get_token()])
        raise HubPublishError(f"Could not {what} '{repo_id}': the Hub rejected the card metadata. {detail}") from None


# --------------------------------------------------------------------------- dataset statistics


def _provenance(
    oracle: str | Oracle | None, prompt_version: str | None, max_ratio: float | None,
    column_oracles: Mapping[str, int],
) -> dict[str, str]:
    """Oracle, model, prompt version and ratio cap, from the arguments or the `atlas_oracle` column
    (whose identities, `AnthropicOracle/model=.../prompt=...`, name the model and prompt)."""
    name = model = None
    if isinstance(oracle, str):
        name = oracle
    elif oracle is not None:
        name = getattr(oracle, "identity", None) or type(oracle).__name__
        model = getattr(oracle, "model", None) or getattr(oracle, "model_name", None)
        prompt_version = prompt_version or getattr(oracle, "prompt_version", None)
    elif len(column_oracles) == 1:
        name = next(iter(column_oracles))
    elif column_oracles:
        name = ", ".join(f"{v} ({column_oracles[v]} rows)" for v in sorted(column_oracles))
    if name:
        recorded = dict(_IDENTITY_FIELD.findall(str(name)))
        model = model or recorded.get("model")
        prompt_version = prompt_version or recorded.get("prompt")
    return {
        "Oracle": _scrub(str(name)) if name else "not recorded",
        "Oracle model": _scrub(str(model)) if model else "not recorded",
        "Prompt version": str(prompt_version) if prompt_version else "not recorded",
        "Ratio cap": f"{max_ratio:.0%} of each trajectory's steps" if max_ratio is not None else "not recorded",
    }


def _size_category(rows: int) -> str:
    for bound, label in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if rows < bound:
            return label
    return "n>1M"


# --------------------------------------------------------------------------- the figure (a PNG, no plotting deps)

_CATEGORY_COLORS = ((66, 133, 244), (52, 168, 83), (234, 67, 53), (251, 188, 5))
_OTHER_COLOR = (128, 128, 128)
_RATIO_COLOR = (103, 58, 183)
_INK = (40, 40, 40)
_AXIS = (170, 170, 170)
_FIG_W, _FIG_H, _PLOT_H, _BASE_Y = 640, 320, 200, 260
_RATIO_BINS = 10

# A 3x5 pixel font: each glyph is five rows of three pixels.
_GLYPHS = dict(zip(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.%/-()",
    "010101111101101 110101110101110 011100100100011 110101101101110 111100110100111 111100110100100 "
    "011100101101011 101101111101101 111010010010111 001001001101010 101110100110101 100100100100111 "
    "101111111101101 110101101101101 010101101101010 110101110100100 010101101110011 110101110110101 "
    "011100010001110 111010010010010 101101101101111 101101101101010 101101111111101 101101010101101 "
    "101101010010010 111001010100111 111101101101111 010110010010111 110001010100111 110001010001110 "
    "101101111001001 111100110001110 011100110101010 111001010010010 010101010101010 010101011001110 "
    "000000000000010 101001010100101 001001010100100 000000111000000 010100100100010 010001001001010".split(),
))


def _draw_text(pixels: bytearray, x: int, y: int, text: str, scale: int = 2, color: tuple = _INK) -> None:
    for char in text.upper():
        glyph = _GLYPHS.get(char)
        if glyph is not None:
            for i, bit in enumerate(glyph):
                if bit == "1":
                    _fill(pixels, x + (i % 3) * scale, y + (i // 3) * scale, scale, scale, color)
        x += 4 * scale


def _text_width(text: str, scale: int = 2) -> int:
    return len(text) * 4 * scale - scale


def _fill(pixels: bytearray, x: int, y: int, w: int, h: int, color: tuple) -> None:
    for row in range(max(y, 0), min(y + h, _FIG_H)):
        start, end = row * _FIG_W + max(x, 0), row * _FIG_W + min(x + w, _FIG_W)
        if end > start:
            pixels[3 * start:3 * end] = bytes(color) * (end - start)


def _bars(pixels: bytearray, x0: int, width: int, counts: Sequence[int], colors: Sequence[tuple],
          labels: Sequence[str], title: str) -> None:
    """One bar panel: bars scaled to the largest count, the count above each, labels below."""
    _draw_text(pixels, x0 + (width - _text_width(title)) // 2, 12, title)
    _fill(pixels, x0, _BASE_Y, width, 1, _AXIS)
    slot = width // len(counts)
    top = max(counts) or 1
    for i, (count, color) in enumerate(zip(counts, colors)):
        height = round(count / top * _PLOT_H)
        bar_x = x0 + i * slot + slot // 6
        bar_w = slot - 2 * (slot // 6)
        _fill(pixels, bar_x, _BASE_Y - height, bar_w, height, color)
        scale = 2 if _text_width(str(count)) <= slot else 1
        _draw_text(pixels, bar_x + (bar_w - _text_width(str(count), scale)) // 2, _BASE_Y - height - 14,
                   str(count), scale)
        if labels[i]:
            label_scale = 2 if _text_width(labels[i]) <= slot else 1
            _draw_text(pixels, x0 + i * slot + (slot - _text_width(labels[i], label_scale)) // 2, _BASE_Y + 8,
                       labels[i], label_scale)


def _png(pixels: bytes, width: int, height: int) -> bytes:
    """Encode 8-bit RGB pixels as a PNG (filter 0 on every row)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    raw = b"".join(b"\0" + pixels[3 * width * y:3 * width * (y + 1)] for y in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")


def _statistics_figure(stats: Mapping[str, Any]) -> bytes:
    """Left: critical steps per category. Right: histogram of each annotated row's critical ratio (10% bins)."""
    pixels = bytearray(b"\xff" * (3 * _FIG_W * _FIG_H))
    names = list(stats["categories"])
    counts = [stats["categories"][c] for c in names]
    colors = [_CATEGORY_COLORS[CATEGORIES.index(c)] if c in CATEGORIES else _OTHER_COLOR for c in names]
    short = {"Plan Creation": "PLAN", "Critical Observation": "OBSERV", "Critical Action": "ACTION",
             "Self Correction": "CORRECT"}
    _bars(pixels, 16, 296, counts, colors, [short.get(c, "OTHER") for c in names], "CRITICAL STEPS BY CATEGORY")
    bins = [0] * _RATIO_BINS
    for ratio in stats["row_ratios"]:
        bins[min(int(math.floor(ratio * _RATIO_BINS + 1e-9)), _RATIO_BINS - 1)] += 1
    x0, width = 336, 288
    _bars(pixels, x0, width, bins, [_RATIO_COLOR] * _RATIO_BINS, [""] * _RATIO_BINS, "CRITICAL RATIO PER ROW")
    for value, text in ((0.0, "0%"), (0.5, "50%"), (1.0, "100%")):
        _draw_text(pixels, x0 + round(value * width) - _text_width(text) // 2, _BASE_Y + 8, text)
    _draw_text(pixels, x0 + (width - _text_width("ROWS PER 10% BIN", 1)) // 2, _BASE_Y + 34, "ROWS PER 10% BIN", 1)
    return _png(bytes(pixels), _FIG_W, _FIG_H)


# --------------------------------------------------------------------------- the dataset card


def _dataset_card_text(
    repo_id: str, meta: dict[str, Any], stats: Mapping[str, Any], provenance: Mapping[str, str],
    source_datasets: Sequence[str] | None, columns: Sequence[str],
) -> str:
    pretty = meta["pretty_name"]
    made = "\n".join(f"| {k} | {v} |" for k, v in provenance.items())
    if source_datasets:
        made += "\n| Source datasets | " + ", ".join(f"`{s}`" for s in source_datasets) + " |"
    critical = stats["critical_steps"] or 1
    per_category = "\n".join(
        f"| {name} | {count} | {count / critical:.1%} |" for name, count in stats["categories"].items()
    )
    split_rows = ", ".join(f"{name}: {n}" for name, n in stats["rows_per_split"].items())
    described = {
        "messages": "the full trajectory as OpenAI-style chat messages (the model's input)",
        "critical_steps": "0-based indices over the assistant turns that carry the loss",
        "critical_categories": "the category of each critical step",
        "critical_reasons": "the oracle's one-line reason for each critical step",
        "atlas_plan": "the oracle's high-level plan of the trajectory",
        "atlas_error": "why the row could not be annotated (empty when it was)",
        "atlas_oracle": "which oracle annotated the row",
    }
    column_rows = "\n".join(f"| `{c}` | {described.get(c, '')} |" for c in columns)
    card = f"""
# {pretty}

Agent trajectories annotated with their **critical steps**, for fine-tuning in the manner of
*{_PAPER}*. Each row keeps the whole trajectory as context; only the critical assistant turns
(about 30% of the steps) carry the loss when training with `atlas_hf`.

## How it was made

An oracle LLM read each trajectory, wrote a short high-level plan, then named its critical steps,
each with one category: Plan Creation, Critical Observation, Critical Action or Self Correction.

| | |
|---|---|
{made}

## Statistics

| | |
|---|---|
| Rows | {stats['rows']} ({split_rows}) |
| Steps (assistant turns) | {stats['steps']} |
| Critical steps | {stats['critical_steps']} |
| Critical ratio (rows without an error) | {stats['critical_ratio']:.1%} |
| Rows marked with an `atlas_error` | {stats['error_rows']} |

| Category | Critical steps | Share |
|---|---|---|
{per_category}

![Critical steps per category and the critical ratio of each row]({FIGURE_PATH})

## Columns

| Column | Meaning |
|---|---|
{column_rows}

## Load and train

```python
from datasets import load_dataset
from peft import LoraConfig
from atlas_hf import AtlasSFTConfig, AtlasSFTTrainer

dataset = load_dataset("{repo_id}", split="train")
trainer = AtlasSFTTrainer(
    model="HuggingFaceTB/SmolLM2-135M-Instruct",
    train_dataset=dataset,
    args=AtlasSFTConfig(output_dir="atlas-sft", step_selection="critical"),
    peft_config=LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", task_type="CAUSAL_LM"),
)
trainer.train()
```

The rows also work with stock TRL through `atlas_hf.CriticalStepDataCollator`.
"""
    return _scrub(card)


def _dataset_metadata(
    base: Mapping[str, Any], repo_id: str, license: str, language: str | Sequence[str],
    source_datasets: Sequence[str] | None, rows: int,
) -> dict[str, Any]:
    """`base` (what `push_to_hub` wrote: dataset_info, configs) with the ATLaS fields set on top."""
    meta = dict(base)
    meta.update(
        license=license,
        language=[language] if isinstance(language, str) else list(language),
        task_categories=["text-generation"],
        size_categories=[_size_category(rows)],
        pretty_name=meta.get("pretty_name") or f"ATLaS critical steps: {repo_id.split('/')[-1]}",
        tags=list(dict.fromkeys([*(meta.get("tags") or []), *DATASET_TAGS])),
    )
    if source_datasets:
        meta["source_datasets"] = list(source_datasets)
    return meta


def _render_card(card_class: type, meta: Mapping[str, Any], body: str) -> str:
    data = card_class.card_data_class(**meta)
    return f"---\n{data.to_yaml()}\n---\n{body}"


def _write_local_dataset(splits: Mapping[str, Dataset], folder: Path) -> dict[str, Any]:
    """Write the Parquet shards as `push_to_hub` lays them out; return the metadata it would write."""
    from datasets import DatasetInfo, SplitDict, SplitInfo
    from datasets.info import DatasetInfosDict
    from datasets.utils.metadata import MetadataConfigs

    first = next(iter(splits.values()))
    info = DatasetInfo(config_name="default", features=first.features, splits=SplitDict(),
                       download_size=0, dataset_size=0)
    for name, split in splits.items():
        path = folder / "data" / f"{name}-00000-of-00001.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        split.to_parquet(str(path))
        info.splits.add(SplitInfo(name=name, num_bytes=split.data.nbytes, num_examples=len(split)))
        info.download_size += path.stat().st_size
        info.dataset_size += split.data.nbytes
    info.size_in_bytes = info.download_size + info.dataset_size
    data = DatasetCardData()
    DatasetInfosDict({"default": info}).to_dataset_card_data(data)
    configs = {"default": {"data_files": [{"split": name, "path": f"data/{name}-*"} for name in splits]}}
    MetadataConfigs(configs).to_dataset_card_data(data)
    return data.to_dict()


def publish_dataset(
    dataset: Dataset | DatasetDict,
    repo_id: str,
    private: bool | None = None,
    token: str | None = None,
    *,
    oracle: str | Oracle | None = None,
    prompt_version: str | None = None,
    max_ratio: float | None = None,
    source_datasets: Sequence[str] | None = None,
    license: str = "apache-2.0",
    language: str | Sequence[str] = "en",
    commit_message: str | None = None,
    local_dir: str | Path | None = None,
) -> str:
    """Publish an annotated `Dataset` (or `DatasetDict`) with its dataset card; return the repo URL.

    The rows go up as Parquet through `push_to_hub`; a second commit adds `README.md` (the metadata
    `push_to_hub` wrote, plus license, task, language, tags and source datasets; then how the
    annotation was made, statistics, a figure and how to train) and the figure `assets/atlas_stats.png`.
    `oracle` is an oracle object or its name; it, `prompt_version` and `max_ratio` default to what the
    `atlas_oracle` column records. With `local_dir`, the same files are written there instead and its
    path is returned.

    Args:
        dataset (`Dataset` or `DatasetDict`): Annotated rows (`messages`, `critical_steps`, ...).
        repo_id (`str`): The dataset repo, `"you/name"`.
        private (`bool`, *optional*): Create the repo private or public; `None` (default) follows the
            Hub's default for your account, as `push_to_hub` does.
        token (`str`, *optional*): A Hub token (default: the logged-in one, or `HF_TOKEN`).
        oracle (`str` or `Oracle`, *optional*): Who chose the steps, for the card.
        prompt_version (`str`, *optional*): The selector prompt's version, for the card.
        max_ratio (`float`, *optional*): The ratio cap the annotation used, for the card.
        source_datasets (`Sequence[str]`, *optional*): The Hub datasets the trajectories come from.
        license (`str`): The card's license.
        language (`str` or `Sequence[str]`): The card's languages.
        commit_message (`str`, *optional*): The commit message of the data upload.
        local_dir (`str` or `Path`, *optional*): Write the repo's files here instead of uploading.

    Returns:
        `str`: The repo URL (or `local_dir`).

    Raises:
        `HubPublishError`: The Hub refused (what failed, and how to fix it; no secret in the message).
    """
    splits = dataset_splits(dataset)
    stats = annotation_statistics(splits)
    provenance = _provenance(oracle, prompt_version, max_ratio, stats["oracles"])
    figure = _statistics_figure(stats)
    columns = next(iter(splits.values())).column_names

    if local_dir is not None:
        folder = Path(local_dir)
        base = _write_local_dataset(splits, folder)
        meta = _dataset_metadata(base, repo_id, license, language, source_datasets, stats["rows"])
        body = _dataset_card_text(repo_id, meta, stats, provenance, source_datasets, columns)
        (folder / "README.md").write_text(_render_card(DatasetCard, meta, body), encoding="utf-8")
        (folder / FIGURE_PATH).parent.mkdir(parents=True, exist_ok=True)
        (folder / FIGURE_PATH).write_bytes(figure)
        logger.info("Wrote dataset %s with its card to %s", repo_id, folder)
        return str(folder)

    api = HfApi(token=token, library_name="atlas_hf")
    message = commit_message or "Upload ATLaS-annotated dataset"
    with _explained("upload the dataset to", repo_id, token):
        pushed = dataset.push_to_hub(repo_id, private=private, token=token, commit_message=message)
    full_id = pushed.repo_url.repo_id or repo_id
    with _explained("read back the card of", full_id, token):
        pushed_card = DatasetCard.load(
            api.hf_hub_download(full_id, "README.md", repo_type="dataset", revision=pushed.oid, token=token)
        )
    meta = _dataset_metadata(pushed_card.data.to_dict(), full_id, license, language, source_datasets, stats["rows"])
    body = _dataset_card_text(full_id, meta, stats, provenance, source_datasets, columns)
    operations = [
        CommitOperationAdd("README.md", _render_card(DatasetCard, meta, body).encode()),
        CommitOperationAdd(FIGURE_PATH, figure),
    ]
    with _explained("upload the dataset card to", full_id, token):
        api.create_commit(full_id, operations, commit_message="Add ATLaS dataset card", repo_type="dataset",
                          parent_commit=pushed.oid)
    url = f"{api.endpoint}/datasets/{full_id}"
    logger.info("Published dataset %s (%d rows) to %s", full_id, stats["rows"], url)
    return url


# --------------------------------------------------------------------------- adapters


def _trainer_summary(trainer: Trainer) -> dict[str, Any]:
    """What a trainer knows about its run; `trainer.atlas_summary()` wins where it exists."""
    args, state = getattr(trainer, "args", None), getattr(trainer, "state", None)
    history = list(getattr(state, "log_history", None) or [])
    losses = [entry["loss"] for entry in history if "loss" in entry]
    train_loss = next((entry["train_loss"] for entry in reversed(history) if "train_loss" in entry), None)
    summary: dict[str, Any] = {
        "step_selection": getattr(args, "step_selection", None),
        "selection_ratio": getattr(args, "selection_ratio", None),
        "epochs": getattr(state, "epoch", None) or getattr(args, "num_train_epochs", None),
        "optimizer_steps": getattr(state, "global_step", None),
        "final_loss": losses[-1] if losses else train_loss,
        "learning_rate": getattr(args, "learning_rate", None),
    }
    atlas_summary = getattr(trainer, "atlas_summary", None)
    if callable(atlas_summary):
        summary.update(atlas_summary())
    return {k: v for k, v in summary.items() if v is not None}


_SUMMARY_LABELS = {
    "step_selection": "Step selection",
    "selection_ratio": "Selection ratio",
    "epochs": "Epochs",
    "optimizer_steps": "Optimizer steps",
    "supervised_tokens": "Supervised tokens",
    "final_loss": "Final training loss",
    "learning_rate": "Learning rate",
}


def _format_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def adapter_card(
    adapter_dir: str | Path,
    *,
    base_model: str | None = None,
    dataset_repo_id: str | None = None,
    training_summary: Mapping[str, Any] | None = None,
    repo_id: str | None = None,
    evaluation: Any = None,
    tags: Sequence[str] | None = None,
) -> ModelCard:
    """The model card of a PEFT adapter folder: PEFT's own metadata kept (`library_name: peft`,
    `base_model`, read from `adapter_config.json` when not given), ATLaS tags, `datasets:`, and the
    training summary. `AtlasSFTTrainer` uses it too, so both ways of publishing give the same card.

    `evaluation` (an `EvaluationReport` or its `to_dict()`; default: the folder's `atlas_eval.json`,
    written by `atlas-hf eval --adapter`) becomes the card's `model-index` and a results table.
    `tags` are added to the card's own and the ATLaS ones."""
    folder = Path(adapter_dir)
    config_path = folder / "adapter_config.json"
    if not config_path.is_file():
        raise FileNotFoundError(
            f"{folder} has no adapter_config.json, so it is not a PEFT adapter folder. Pass the folder that "
            "`PeftModel.save_pretrained` (or `trainer.save_model`) wrote, or the trainer itself."
        )
    adapter_config = json.loads(config_path.read_text(encoding="utf-8"))
    base_model = base_model or adapter_config.get("base_model_name_or_path")
    meta: dict[str, Any] = {}
    if (folder / "README.md").is_file():
        meta = ModelCard.load(folder / "README.md", ignore_metadata_errors=True).data.to_dict()
    hub_base = base_model if base_model and _REPO_ID_RE.match(base_model) else None
    if base_model and hub_base is None:
        logger.warning("base_model %r is a local path, not a Hub model id, so the card's `base_model` is left "
                       "out; pass base_model='org/name' to publish_adapter to set it.", Path(base_model).name)
    meta.pop("base_model", None)
    meta.update(
        library_name="peft",
        pipeline_tag="text-generation",
        tags=list(dict.fromkeys([*(meta.get("tags") or []), *ADAPTER_TAGS, *(tags or [])])),
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
    summary = dict(training_summary or {})
    rows = "\n".join(f"| {_SUMMARY_LABELS.get(k, k.replace('_', ' ').capitalize())} | {_format_value(v)} |"
                     for k, v in summary.items()) or "| (no training summary was given) | |"
    rank, alpha = adapter_config.get("r"), adapter_config.get("lora_alpha")
    targets = adapter_config.get("target_modules")
    targets = ", ".join(sorted(targets)) if isinstance(targets, list) else targets
    data_line = (f"[`{dataset_repo_id}`](https://huggingface.co/datasets/{dataset_repo_id})"
                 if dataset_repo_id else "not recorded")
    body = f"""
# {name}

A {adapter_config.get('peft_type', 'PEFT')} adapter for `{hub_base or 'the base model'}`, fine-tuned with
`atlas_hf` in the manner of *{_PAPER}*: the whole trajectory is the input, and the loss falls only on
the critical steps the oracle chose.

- Base model: `{hub_base or 'not recorded'}`
- Training data: {data_line}
- LoRA rank {rank}, alpha {alpha}, target modules: {targets}

## Training summary

| | |
|---|---|
{rows}

{_evaluation_section(evaluation)}## Use

```python
from transformers import AutoModelForCausalLM
from peft import PeftModel

base = AutoModelForCausalLM.from_pretrained("{hub_base or '<base model>'}")
model = PeftModel.from_pretrained(base, "{name}")
```

## Citation

```bibtex
{CITATION}
```
"""
    return ModelCard(_render_card(ModelCard, meta, _scrub(body)))


def _evaluation_dict(evaluation: Any, folder: Path) -> dict[str, Any] | None:
    from atlas_hf.evaluation import EVAL_RESULTS_FILE

    if evaluation is None and (folder / EVAL_RESULTS_FILE).is_file():
        evaluation = json.loads((folder / EVAL_RESULTS_FILE).read_text(encoding="utf-8"))
    if evaluation is not None and hasattr(evaluation, "to_dict"):
        evaluation = evaluation.to_dict()
    return dict(evaluation) if evaluation else None


def eval_results(evaluation: Mapping[str, Any]) -> list[EvalResult]:
    """Rollout results (an `EvaluationReport.to_dict()`) as Hub `model-index` entries: one per environment,
    metric `success_rate` in percent, split named by the evaluation's seeds."""
    config = evaluation.get("config") or {}
    first, episodes = config.get("seed", 0), config.get("episodes")
    split = f"seeds {first}-{first + episodes - 1}" if episodes else f"seeds from {first}"
    return [
        EvalResult(task_type="reinforcement-learning", task_name="Agent rollouts", dataset_type=env,
                   dataset_name=env, dataset_split=split, metric_type="success_rate",
                   metric_name="Success rate (%)", metric_value=round(100 * float(result["success_rate"]), 2))
        for env, result in evaluation["envs"].items()
    ]


def _evaluation_section(evaluation: Mapping[str, Any] | None) -> str:
    if not evaluation:
        return ""
    rows = "\n".join(
        f"| {env} | {r['episodes']} | {100 * r['success_rate']:.1f}% | "
        f"{100 * r['ci95'][0]:.1f}-{100 * r['ci95'][1]:.1f}% | {r['mean_turns']:.1f} |"
        for env, r in evaluation["envs"].items()
    )
    return f"""## Evaluation

Greedy rollouts with `atlas_hf.evaluate_agent` (95% Wilson intervals):

| environment | episodes | success | 95% CI | turns |
|---|---|---|---|---|
{rows}

"""


@contextlib.contextmanager
def _adapter_folder(trainer_or_output_dir: Trainer | str | Path) -> Iterator[tuple[Path, dict[str, Any]]]:
    """The adapter folder to publish and the run summary: a trainer's model is saved to a temp folder."""
    if isinstance(trainer_or_output_dir, (str, Path)):
        folder = Path(trainer_or_output_dir)
        if not folder.is_dir():
            raise FileNotFoundError(f"Adapter folder {folder} does not exist. Pass the folder that "
                                    "`PeftModel.save_pretrained` (or `trainer.save_model`) wrote, or the trainer.")
        yield folder, {}
        return
    trainer = trainer_or_output_dir
    model = getattr(trainer, "model", None)
    if model is None or not hasattr(model, "peft_config"):
        raise TypeError(
            "publish_adapter expects a PEFT adapter folder or a trainer whose model is a PeftModel (train with "
            f"`peft_config=`); got {type(trainer).__name__}."
        )
    with tempfile.TemporaryDirectory(prefix="atlas-adapter-") as tmp:
        model.save_pretrained(tmp)
        processor = getattr(trainer, "processing_class", None)
        if processor is not None and hasattr(processor, "save_pretrained"):
            processor.save_pretrained(tmp)
        yield Path(tmp), _trainer_summary(trainer)


def publish_adapter(
    trainer_or_output_dir: Trainer | str | Path,
    repo_id: str,
    private: bool | None = None,
    token: str | None = None,
    *,
    base_model: str | None = None,
    dataset_repo_id: str | None = None,
    training_summary: Mapping[str, Any] | None = None,
    local_dir: str | Path | None = None,
    evaluation: Any = None,
) -> str:
    """Publish a PEFT adapter (a folder, or a trainer's model) with its model card; return the repo URL.

    The folder's top-level files go up in one commit with `huggingface_hub.upload_folder`, README.md
    replaced by `adapter_card(...)`. Checkpoint folders are left out. With `local_dir`, the same files
    are written there instead and its path is returned. `evaluation` (an `EvaluationReport`, or by
    default the folder's `atlas_eval.json`) puts rollout success rates in the card's `model-index`.

    Args:
        trainer_or_output_dir (`Trainer`, `str` or `Path`): A trainer (its model is saved first) or the
            folder `save_model` wrote.
        repo_id (`str`): The model repo, `"you/name"`.
        private (`bool`, *optional*): Create the repo private or public; `None` (default) follows the
            Hub's default for your account, as `Trainer.push_to_hub` does.
        token (`str`, *optional*): A Hub token (default: the logged-in one, or `HF_TOKEN`).
        base_model (`str`, *optional*): The base model's Hub id (default: the adapter config's).
        dataset_repo_id (`str`, *optional*): The training dataset's repo, linked from the card.
        training_summary (`Mapping`, *optional*): `trainer.atlas_summary()` (default: read from the
            trainer, or the folder's `atlas_summary.json`).
        local_dir (`str` or `Path`, *optional*): Write the repo's files here instead of uploading.
        evaluation (`EvaluationReport` or `dict`, *optional*): Rollout results for `model-index`.

    Returns:
        `str`: The repo URL (or `local_dir`).

    Raises:
        `FileNotFoundError`: The folder holds no adapter.
        `HubPublishError`: The Hub refused (what failed, and how to fix it; no secret in the message).
    """
    with _adapter_folder(trainer_or_output_dir) as (folder, trainer_summary), \
            tempfile.TemporaryDirectory(prefix="atlas-stage-") as tmp:
        run_summary = {**trainer_summary, **(training_summary or {})}
        stage = Path(tmp)
        files = [p for p in folder.iterdir() if p.is_file() and p.name != "README.md"]
        if not any(p.name.startswith("adapter_model.") for p in files):
            raise FileNotFoundError(
                f"{folder} has no adapter_model.safetensors (or .bin). Save the adapter with "
                "`PeftModel.save_pretrained(folder)` or `trainer.save_model(folder)` before publishing."
            )
        for path in files:
            shutil.copy2(path, stage / path.name)
        if (folder / "README.md").is_file():
            shutil.copy2(folder / "README.md", stage / "README.md")
        card = adapter_card(stage, base_model=base_model, dataset_repo_id=dataset_repo_id,
                            training_summary=run_summary, repo_id=repo_id, evaluation=evaluation)
        (stage / "README.md").write_text(str(card), encoding="utf-8")

        if local_dir is not None:
            out = Path(local_dir)
            out.mkdir(parents=True, exist_ok=True)
            for path in stage.iterdir():
                shutil.copy2(path, out / path.name)
            logger.info("Wrote adapter %s with its card to %s", repo_id, out)
            return str(out)

        api = HfApi(token=token, library_name="atlas_hf")
        with _explained("create the model repository", repo_id, token):
            repo_url = api.create_repo(repo_id, private=private, exist_ok=True)
        full_id = repo_url.repo_id or repo_id
        with _explained("upload the adapter to", full_id, token):
            api.upload_folder(repo_id=full_id, folder_path=stage,
                              commit_message="Upload ATLaS adapter")
    url = f"{api.endpoint}/{full_id}"
    logger.info("Published adapter %s to %s", full_id, url)
    return url


def publish(
    *,
    dataset: Dataset | DatasetDict | None = None,
    adapter: Trainer | str | Path | None = None,
    dataset_repo: str | None = None,
    adapter_repo: str | None = None,
    private: bool | None = None,
    token: str | None = None,
    local_dir: str | Path | None = None,
    base_model: str | None = None,
    **dataset_card: Any,
) -> dict[str, str]:
    """Publish an annotated dataset and/or an adapter in one call: what the CLI and the recipes do.

    The adapter's card links the dataset when both go up. With `local_dir`, the repos are written
    into `local_dir/dataset` and `local_dir/adapter` instead, as they would be on the Hub.

    Args:
        dataset (`Dataset` or `DatasetDict`, *optional*): The annotated trajectories.
        adapter (`Trainer`, `str` or `Path`, *optional*): A trainer, or the folder its adapter was saved to.
        dataset_repo (`str`, *optional*): The dataset's repo id; needed with `dataset`.
        adapter_repo (`str`, *optional*): The adapter's repo id; needed with `adapter`.
        private (`bool`, *optional*): Create the repos private or public; `None` follows the Hub's default.
        token (`str`, *optional*): A Hub token (default: the logged-in one, or `HF_TOKEN`).
        local_dir (`str` or `Path`, *optional*): Write the repos here instead of uploading.
        base_model (`str`, *optional*): The adapter's base model id, for its card.
        **dataset_card: Keyword arguments of `publish_dataset` (`oracle=`, `max_ratio=`, `license=`, ...).

    Returns:
        `dict[str, str]`: `{"dataset": url, "adapter": url}` for what was published.

    Raises:
        `ValueError`: Nothing to publish, or an artifact without its repo id.
        `HubPublishError`: The Hub refused (what, and how to fix it).
    """
    if dataset is None and adapter is None:
        raise ValueError("Nothing to publish: pass dataset=, adapter= or both.")
    for artifact, repo, name in ((dataset, dataset_repo, "dataset_repo"), (adapter, adapter_repo, "adapter_repo")):
        if artifact is not None and not repo:
            raise ValueError(f"Pass {name}= (e.g. 'you/name') to publish the {name.split('_')[0]}.")
    where: dict[str, str] = {}
    if dataset is not None:
        target = Path(local_dir) / "dataset" if local_dir else None
        where["dataset"] = publish_dataset(dataset, dataset_repo, private=private, token=token, local_dir=target,
                                           **dataset_card)
    if adapter is not None:
        target = Path(local_dir) / "adapter" if local_dir else None
        where["adapter"] = publish_adapter(adapter, adapter_repo, private=private, token=token, local_dir=target,
                                           base_model=base_model, dataset_repo_id=dataset_repo)
    return where
