"""atlas_hf: ATLaS (agent tuning on critical steps) for TRL.

The data path, one module per arrow, in the order below:
raw rows -> canonical messages -> (oracle) critical steps -> token labels -> trainer -> adapter -> Hub.
Beside it, not on it: `atlas_hf.envs` (text environments and their expert demos) and the rollout
evaluator, which tell whether the trained agent acts better.

Names are imported on first use, so `import atlas_hf` stays fast (torch and TRL load only when a
name that needs them is touched).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.6.0"

_EXPORTS: dict[str, str] = {
    # raw rows -> canonical `messages`, from any published schema
    "normalize_trajectories": "atlas_hf.trajectory",
    "normalize_trajectories_with_report": "atlas_hf.trajectory",
    "NormalizationReport": "atlas_hf.trajectory",
    "load_trajectories": "atlas_hf.loading",
    "load_rows": "atlas_hf.loading",
    "TrajectoryError": "atlas_hf.errors",
    "load_sample": "atlas_hf.sample",
    # messages -> critical steps, chosen by an oracle (Claude, a local model, or a baseline)
    "CATEGORIES": "atlas_hf.oracles.base",
    "Annotation": "atlas_hf.oracles.base",
    "Oracle": "atlas_hf.oracles.base",
    "validate_annotation": "atlas_hf.oracles.base",
    "AnthropicOracle": "atlas_hf.oracles.anthropic",
    "AnthropicOracleConfig": "atlas_hf.oracles.anthropic_config",
    "OpenAIChatOracle": "atlas_hf.oracles.openai_chat",
    "OpenAIOracleConfig": "atlas_hf.oracles.openai_chat",
    "LocalOracle": "atlas_hf.oracles.local",
    "RandomOracle": "atlas_hf.oracles.baselines",
    "AllStepsOracle": "atlas_hf.oracles.baselines",
    "PerplexityOracle": "atlas_hf.oracles.baselines",
    "build_oracle": "atlas_hf.oracles.registry",
    "register_oracle": "atlas_hf.oracles.registry",
    "list_oracles": "atlas_hf.oracles.registry",
    "CriticalStepAnnotator": "atlas_hf.annotate",
    "annotate_dataset": "atlas_hf.annotate",
    "annotation_statistics": "atlas_hf.annotation_stats",
    "oracle_agreement": "atlas_hf.agreement",
    # which steps carry loss: ATLaS's critical steps, or the paper's baselines
    "select_steps": "atlas_hf.selection",
    "LabellingOptions": "atlas_hf.selection",
    "max_selected_steps": "atlas_hf.selection",
    "DEFAULT_MAX_RATIO": "atlas_hf.selection",
    # steps -> token labels, with the model's own chat template
    "CriticalStepLabeller": "atlas_hf.tokenization",
    "label_trajectory": "atlas_hf.tokenization",
    "template_profile": "atlas_hf.chat_template",
    "TemplateProfile": "atlas_hf.chat_template",
    "prepare_messages": "atlas_hf.chat_template",
    "training_template": "atlas_hf.chat_template",
    "CriticalStepDataCollator": "atlas_hf.collator",
    "label_dataset": "atlas_hf.labelling",
    # labels -> a trained adapter
    "AtlasSFTConfig": "atlas_hf.config",
    "AtlasSFTTrainer": "atlas_hf.trainer",
    "load_default_model": "atlas_hf.models",
    "load_default_tokenizer": "atlas_hf.models",
    # the trained agent, acting: rollouts in text environments (`atlas_hf.envs`), success with intervals
    "evaluate_agent": "atlas_hf.evaluation",
    "EvaluationReport": "atlas_hf.evaluation",
    "read_records": "atlas_hf.episode_records",
    "recorded_report": "atlas_hf.evaluation",
    "split_env_names": "atlas_hf.evaluation",
    "TransformersPolicy": "atlas_hf.policy",
    "PolicyFailure": "atlas_hf.policy",
    "OpenAIChatPolicy": "atlas_hf.openai_policy",
    "paired_difference": "atlas_hf.evaluation",
    "wilson_interval": "atlas_hf.evaluation",
    "load_model_and_tokenizer": "atlas_hf.models",
    # dataset and adapter -> the Hub
    "publish_dataset": "atlas_hf.hub",
    "publish_adapter": "atlas_hf.hub",
    "publish": "atlas_hf.hub",
    # what can go wrong, in one module
    "AtlasError": "atlas_hf.errors",
    "InvalidInputError": "atlas_hf.errors",
    "AnnotationError": "atlas_hf.errors",
    "OracleError": "atlas_hf.errors",
    "TemplateError": "atlas_hf.errors",
    "AtlasFileNotFoundError": "atlas_hf.errors",
    "ColumnNotFoundError": "atlas_hf.errors",
    "HubPublishError": "atlas_hf.errors",
    "EnvironmentNotFoundError": "atlas_hf.errors",
    "DistributedSetupError": "atlas_hf.errors",
}

__all__ = list(_EXPORTS)

if TYPE_CHECKING:  # what IDEs and type checkers see; at run time names load on first use
    from atlas_hf.agreement import oracle_agreement
    from atlas_hf.annotate import annotate_dataset, CriticalStepAnnotator
    from atlas_hf.annotation_stats import annotation_statistics
    from atlas_hf.chat_template import TemplateProfile, prepare_messages, template_profile, training_template
    from atlas_hf.collator import CriticalStepDataCollator
    from atlas_hf.config import AtlasSFTConfig
    from atlas_hf.errors import (
        AnnotationError,
        AtlasError,
        AtlasFileNotFoundError,
        ColumnNotFoundError,
        DistributedSetupError,
        EnvironmentNotFoundError,
        HubPublishError,
        InvalidInputError,
        OracleError,
        TemplateError,
        TrajectoryError,
    )
    from atlas_hf.episode_records import read_records
    from atlas_hf.evaluation import (
        EvaluationReport,
        evaluate_agent,
        paired_difference,
        recorded_report,
        split_env_names,
        wilson_interval,
    )
    from atlas_hf.hub import publish, publish_adapter, publish_dataset
    from atlas_hf.labelling import label_dataset
    from atlas_hf.loading import load_rows, load_trajectories
    from atlas_hf.models import load_default_model, load_default_tokenizer, load_model_and_tokenizer
    from atlas_hf.openai_policy import OpenAIChatPolicy
    from atlas_hf.oracles.anthropic import AnthropicOracle
    from atlas_hf.oracles.anthropic_config import AnthropicOracleConfig
    from atlas_hf.oracles.base import CATEGORIES, Annotation, Oracle, validate_annotation
    from atlas_hf.oracles.baselines import AllStepsOracle, PerplexityOracle, RandomOracle
    from atlas_hf.oracles.local import LocalOracle
    from atlas_hf.oracles.openai_chat import OpenAIChatOracle, OpenAIOracleConfig
    from atlas_hf.oracles.registry import build_oracle, list_oracles, register_oracle
    from atlas_hf.policy import PolicyFailure, TransformersPolicy
    from atlas_hf.sample import load_sample
    from atlas_hf.selection import DEFAULT_MAX_RATIO, LabellingOptions, max_selected_steps, select_steps
    from atlas_hf.tokenization import CriticalStepLabeller, label_trajectory
    from atlas_hf.trainer import AtlasSFTTrainer
    from atlas_hf.trajectory import (
        NormalizationReport,
        normalize_trajectories,
        normalize_trajectories_with_report,
    )

def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'atlas_hf' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
