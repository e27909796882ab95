"""The trained agent, acting: text environments (`envs`), policies that play them (`policy` in
process, `openai_policy` against a server), the batched evaluator with success rates, progress
scores and intervals (`evaluator`), and its records file (`records`). Beside the data path:
imports `trajectories` and `training.chat_template`, so rollouts render as training did.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from atlas_hf._lazy import lazy_exports

_EXPORTS: dict[str, str] = {
    "evaluate_agent": "atlas_hf.evaluation.evaluator",
    "EvaluationReport": "atlas_hf.evaluation.evaluator",
    "recorded_report": "atlas_hf.evaluation.evaluator",
    "split_env_names": "atlas_hf.evaluation.evaluator",
    "paired_difference": "atlas_hf.evaluation.evaluator",
    "wilson_interval": "atlas_hf.evaluation.evaluator",
    "read_records": "atlas_hf.evaluation.records",
    "TransformersPolicy": "atlas_hf.evaluation.policy",
    "PolicyFailure": "atlas_hf.evaluation.policy",
    "OpenAIChatPolicy": "atlas_hf.evaluation.openai_policy",
}

__all__ = list(_EXPORTS)

if TYPE_CHECKING:
    from atlas_hf.evaluation.evaluator import (
        evaluate_agent,
        EvaluationReport,
        paired_difference,
        recorded_report,
        split_env_names,
        wilson_interval,
    )
    from atlas_hf.evaluation.openai_policy import OpenAIChatPolicy
    from atlas_hf.evaluation.policy import PolicyFailure, TransformersPolicy
    from atlas_hf.evaluation.records import read_records

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals(), "atlas_hf.evaluation.evaluator")
