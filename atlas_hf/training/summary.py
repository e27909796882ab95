"""What a training run did, built in one place: for logs, `atlas_summary.json` and the adapter card.

`training_summary(trainer)` builds it from any `transformers.Trainer` (an `AtlasSFTTrainer` adds what
it labelled), `write_training_summary` saves it beside the model, and `read_training_summary` reads it
back, or what a checkpoint's `trainer_state.json` knows, for a card published later from the folder.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping, Sequence

SUMMARY_FILE = "atlas_summary.json"
"""The file beside a saved model that holds its training summary."""


def final_loss(log_history: Sequence[Mapping[str, Any]]) -> float | None:
    """The last logged training loss of a `Trainer`'s `log_history` (else its closing `train_loss`)."""
    for key in ("loss", "train_loss"):
        losses = [entry[key] for entry in log_history if key in entry]
        if losses:
            return float(losses[-1])
    return None


def state_summary(state: Mapping[str, Any]) -> dict[str, Any]:
    """`epochs`, `optimizer_steps` and `final_loss` of a trainer state (`vars(trainer.state)`, or a
    checkpoint's `trainer_state.json`), the ones it knows."""
    summary = {
        "epochs": state.get("epoch"),
        "optimizer_steps": state.get("global_step"),
        "final_loss": final_loss(state.get("log_history") or []),
    }
    return {k: v for k, v in summary.items() if v is not None}


def training_summary(trainer: Any) -> dict[str, Any]:
    """What a trainer knows about its run.

    Args:
        trainer (`transformers.Trainer`): Any trainer; an `AtlasSFTTrainer` adds its labelling counts
            (`rows`, `supervised_tokens`, `total_tokens`, `supervised_fraction`, `skipped_rows`,
            `truncated_steps`) and the ratio its random selections were drawn at.

    Returns:
        `dict`: `step_selection`, `selection_ratio`, `epochs`, `optimizer_steps`, `learning_rate`,
        `final_loss` (None before training) and, for an `AtlasSFTTrainer`, the counts above; keys a
        plain trainer does not know are left out.
    """
    from atlas_hf.training.selection import RATIO_SELECTIONS

    args, state = getattr(trainer, "args", None), getattr(trainer, "state", None)
    history = getattr(state, "log_history", None) or []
    selection = getattr(args, "step_selection", None)
    summary: dict[str, Any] = {
        "step_selection": selection,
        "selection_ratio": getattr(args, "selection_ratio", None),
        "epochs": (getattr(state, "epoch", None) or getattr(args, "num_train_epochs", None)),
        "optimizer_steps": getattr(state, "global_step", None) or None,
        "learning_rate": getattr(args, "learning_rate", None),
    }
    stats = getattr(trainer, "label_stats", {}).get("train")
    if stats is not None:
        ratio = summary["selection_ratio"]
        if ratio is None and stats.selection_ratios:
            ratio = stats.selection_ratios[0] if len(stats.selection_ratios) == 1 else list(stats.selection_ratios)
        summary.update(
            selection_ratio=ratio if selection in RATIO_SELECTIONS else None,
            rows=stats.rows,
            supervised_tokens=stats.supervised_tokens,
            total_tokens=stats.total_tokens,
            supervised_fraction=stats.supervised_fraction,
            skipped_rows=stats.skipped_rows,
            truncated_steps=stats.truncated_steps,
        )
    summary["final_loss"] = final_loss(history)
    always = {"selection_ratio", "final_loss"} if stats is not None else set()  # None says "not drawn", "not yet"
    return {k: v for k, v in summary.items() if v is not None or k in always}


def write_training_summary(summary: Mapping[str, Any], folder: str | Path) -> Path:
    """Save a training summary beside a model (`atlas_summary.json`), so a card made from the folder
    later shows the same numbers.

    Args:
        summary (`Mapping`): `training_summary(trainer)`.
        folder (`str` or `Path`): The saved model's folder.

    Returns:
        `Path`: The file written.
    """
    path = Path(folder) / SUMMARY_FILE
    path.write_text(json.dumps(dict(summary), indent=2, default=str) + "\n", encoding="utf-8")
    return path


def read_training_summary(folder: str | Path) -> dict[str, Any]:
    """The training summary saved beside a model, else what the folder's `trainer_state.json` knows.

    Args:
        folder (`str` or `Path`): A saved model or checkpoint folder.

    Returns:
        `dict`: The summary; `{}` when the folder has neither file.
    """
    folder = Path(folder)
    if (folder / SUMMARY_FILE).is_file():
        return json.loads((folder / SUMMARY_FILE).read_text(encoding="utf-8"))
    if (folder / "trainer_state.json").is_file():
        return state_summary(json.loads((folder / "trainer_state.json").read_text(encoding="utf-8")))
    return {}
