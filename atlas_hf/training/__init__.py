"""Training on the critical steps: which steps carry loss (`selection`), their token labels from the
model's own chat template (`chat_template`, `turn_spans`, `labeller`, `dataset_labelling`), the
collator, `AtlasSFTConfig` / `AtlasSFTTrainer` (`config`, `trainer`, `lm_head`, `parallelism`), and
train-and-save in one call (`run`). Imports `trajectories`; writes its card through `hub.cards`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from atlas_hf._lazy import lazy_exports

_EXPORTS: dict[str, str] = {
    "LabellingOptions": "atlas_hf.training.selection",
    "select_steps": "atlas_hf.training.selection",
    "CriticalStepLabeller": "atlas_hf.training.labeller",
    "label_trajectory": "atlas_hf.training.labeller",
    "template_profile": "atlas_hf.training.chat_template",
    "TemplateProfile": "atlas_hf.training.chat_template",
    "prepare_messages": "atlas_hf.training.chat_template",
    "training_template": "atlas_hf.training.chat_template",
    "CriticalStepDataCollator": "atlas_hf.training.collator",
    "label_dataset": "atlas_hf.training.dataset_labelling",
    "AtlasSFTConfig": "atlas_hf.training.config",
    "AtlasSFTTrainer": "atlas_hf.training.trainer",
    "train": "atlas_hf.training.run",
    "default_training_config": "atlas_hf.training.run",
    "TRAIN_DEFAULTS": "atlas_hf.training.run",
}

__all__ = list(_EXPORTS)

if TYPE_CHECKING:
    from atlas_hf.training.chat_template import prepare_messages, template_profile, TemplateProfile, training_template
    from atlas_hf.training.collator import CriticalStepDataCollator
    from atlas_hf.training.config import AtlasSFTConfig
    from atlas_hf.training.dataset_labelling import label_dataset
    from atlas_hf.training.labeller import CriticalStepLabeller, label_trajectory
    from atlas_hf.training.run import default_training_config, train, TRAIN_DEFAULTS
    from atlas_hf.training.selection import LabellingOptions, select_steps
    from atlas_hf.training.trainer import AtlasSFTTrainer

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
