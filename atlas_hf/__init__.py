"""atlas_hf: ATLaS (agent tuning on critical steps) for TRL.

The package is laid out by stage, in the order the data flows; a stage imports only the stages
above it (and `errors`, `models`), never one below (one exception: the trainer writes its model card
at save through `hub.cards`, as TRL's trainer writes its own), and no library module imports `scripts`:

- `trajectories/`: raw rows of any schema -> canonical `messages`; the columns between the stages
  (`schema`: names, row checks, the ratio cap recorded in `atlas_oracle`); the embedded sample.
- `annotation/`: messages -> `critical_steps`, through an oracle (`annotation.oracles`, one module per
  oracle, built by name from a registry); the durable answer cache; statistics and agreement.
- `training/`: critical steps -> token labels (step selection, the model's chat template, TRL's
  generation masks) -> `AtlasSFTTrainer` -> an adapter.
- `hub/`: the annotated dataset and the adapter -> Hub repos, with cards and figures (reads the
  training summary and, when there is one, the evaluation's results).
- `evaluation/`: beside the path, not on it: the trained agent acting in text environments
  (`evaluation.envs`), through a policy (in process or an OpenAI-compatible server); reads
  `training`'s template preparation so rollouts render as training did.
- `scripts/`: the front ends over the library (the `atlas-hf` CLI, the one training script, the demo).

`errors` holds every exception; `models` loads the embedded default model that every stage may use.

Names are imported on first use, so `import atlas_hf` stays fast (torch and TRL load only when a
name that needs them is touched). The flat module paths of 0.6 (`atlas_hf.trainer`, ...) still
import for one release, with a `FutureWarning` (`atlas_hf._moved`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from atlas_hf import _moved
from atlas_hf._lazy import lazy_exports

__version__ = "0.7.0"

_EXPORTS: dict[str, str] = {
    # raw rows -> canonical `messages`, from any published schema
    "normalize_trajectories": "atlas_hf.trajectories.normalize",
    "normalize_trajectories_with_report": "atlas_hf.trajectories.normalize",
    "NormalizationReport": "atlas_hf.trajectories.normalize",
    "load_trajectories": "atlas_hf.trajectories.loading",
    "load_rows": "atlas_hf.trajectories.loading",
    "TrajectoryError": "atlas_hf.errors",
    "load_sample": "atlas_hf.trajectories.sample",
    # messages -> critical steps, chosen by an oracle (Claude, a local model, or a baseline)
    "CATEGORIES": "atlas_hf.annotation.oracles.base",
    "Annotation": "atlas_hf.annotation.oracles.base",
    "Oracle": "atlas_hf.annotation.oracles.base",
    "validate_annotation": "atlas_hf.annotation.oracles.base",
    "AnthropicOracle": "atlas_hf.annotation.oracles.anthropic",
    "AnthropicOracleConfig": "atlas_hf.annotation.oracles.anthropic_config",
    "OpenAIChatOracle": "atlas_hf.annotation.oracles.openai_chat",
    "OpenAIOracleConfig": "atlas_hf.annotation.oracles.openai_chat",
    "LocalOracle": "atlas_hf.annotation.oracles.local",
    "RandomOracle": "atlas_hf.annotation.oracles.baselines",
    "AllStepsOracle": "atlas_hf.annotation.oracles.baselines",
    "PerplexityOracle": "atlas_hf.annotation.oracles.baselines",
    "build_oracle": "atlas_hf.annotation.oracles.registry",
    "register_oracle": "atlas_hf.annotation.oracles.registry",
    "list_oracles": "atlas_hf.annotation.oracles.registry",
    "CriticalStepAnnotator": "atlas_hf.annotation.annotator",
    "annotate_dataset": "atlas_hf.annotation.annotator",
    "annotation_statistics": "atlas_hf.annotation.statistics",
    "oracle_agreement": "atlas_hf.annotation.agreement",
    # which steps carry loss: ATLaS's critical steps, or the paper's baselines
    "select_steps": "atlas_hf.training.selection",
    "LabellingOptions": "atlas_hf.training.selection",
    "max_selected_steps": "atlas_hf.trajectories.schema",
    "DEFAULT_MAX_RATIO": "atlas_hf.trajectories.schema",
    # steps -> token labels, with the model's own chat template
    "CriticalStepLabeller": "atlas_hf.training.labeller",
    "label_trajectory": "atlas_hf.training.labeller",
    "template_profile": "atlas_hf.training.chat_template",
    "TemplateProfile": "atlas_hf.training.chat_template",
    "prepare_messages": "atlas_hf.training.chat_template",
    "training_template": "atlas_hf.training.chat_template",
    "CriticalStepDataCollator": "atlas_hf.training.collator",
    "label_dataset": "atlas_hf.training.dataset_labelling",
    # labels -> a trained adapter
    "AtlasSFTConfig": "atlas_hf.training.config",
    "AtlasSFTTrainer": "atlas_hf.training.trainer",
    "load_default_model": "atlas_hf.models",
    "load_default_tokenizer": "atlas_hf.models",
    # the trained agent, acting: rollouts in text environments (`atlas_hf.evaluation.envs`), success with intervals
    "evaluate_agent": "atlas_hf.evaluation.evaluator",
    "EvaluationReport": "atlas_hf.evaluation.evaluator",
    "read_records": "atlas_hf.evaluation.records",
    "recorded_report": "atlas_hf.evaluation.evaluator",
    "split_env_names": "atlas_hf.evaluation.evaluator",
    "TransformersPolicy": "atlas_hf.evaluation.policy",
    "PolicyFailure": "atlas_hf.evaluation.policy",
    "OpenAIChatPolicy": "atlas_hf.evaluation.openai_policy",
    "paired_difference": "atlas_hf.evaluation.evaluator",
    "wilson_interval": "atlas_hf.evaluation.evaluator",
    "load_model_and_tokenizer": "atlas_hf.models",
    # dataset and adapter -> the Hub
    "publish_dataset": "atlas_hf.hub.publishing",
    "publish_adapter": "atlas_hf.hub.publishing",
    "publish": "atlas_hf.hub.publishing",
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
    from atlas_hf.annotation.agreement import oracle_agreement
    from atlas_hf.annotation.annotator import annotate_dataset, CriticalStepAnnotator
    from atlas_hf.annotation.statistics import annotation_statistics
    from atlas_hf.training.chat_template import TemplateProfile, prepare_messages, template_profile, training_template
    from atlas_hf.training.collator import CriticalStepDataCollator
    from atlas_hf.training.config import AtlasSFTConfig
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
    from atlas_hf.evaluation.records import read_records
    from atlas_hf.evaluation.evaluator import (
        EvaluationReport,
        evaluate_agent,
        paired_difference,
        recorded_report,
        split_env_names,
        wilson_interval,
    )
    from atlas_hf.hub.publishing import publish, publish_adapter, publish_dataset
    from atlas_hf.training.dataset_labelling import label_dataset
    from atlas_hf.trajectories.loading import load_rows, load_trajectories
    from atlas_hf.models import load_default_model, load_default_tokenizer, load_model_and_tokenizer
    from atlas_hf.evaluation.openai_policy import OpenAIChatPolicy
    from atlas_hf.annotation.oracles.anthropic import AnthropicOracle
    from atlas_hf.annotation.oracles.anthropic_config import AnthropicOracleConfig
    from atlas_hf.annotation.oracles.base import CATEGORIES, Annotation, Oracle, validate_annotation
    from atlas_hf.annotation.oracles.baselines import AllStepsOracle, PerplexityOracle, RandomOracle
    from atlas_hf.annotation.oracles.local import LocalOracle
    from atlas_hf.annotation.oracles.openai_chat import OpenAIChatOracle, OpenAIOracleConfig
    from atlas_hf.annotation.oracles.registry import build_oracle, list_oracles, register_oracle
    from atlas_hf.evaluation.policy import PolicyFailure, TransformersPolicy
    from atlas_hf.trajectories.sample import load_sample
    from atlas_hf.training.selection import LabellingOptions, select_steps
    from atlas_hf.trajectories.schema import DEFAULT_MAX_RATIO, max_selected_steps
    from atlas_hf.training.labeller import CriticalStepLabeller, label_trajectory
    from atlas_hf.training.trainer import AtlasSFTTrainer
    from atlas_hf.trajectories.normalize import (
        NormalizationReport,
        normalize_trajectories,
        normalize_trajectories_with_report,
    )

_moved.install()
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
