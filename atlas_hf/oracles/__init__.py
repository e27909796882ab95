"""Oracles that choose the critical steps of trajectories: Claude, local models, the paper's baselines.

One module per oracle: `base` (the protocol and the answer), `prompt` (the selector prompt),
`anthropic`, `local`, `baselines`.
"""

from atlas_hf.oracles.anthropic import AnthropicOracle
from atlas_hf.oracles.base import CATEGORIES, Annotation, Oracle, validate_annotation
from atlas_hf.oracles.baselines import AllStepsOracle, PerplexityOracle, RandomOracle
from atlas_hf.oracles.local import LocalOracle
from atlas_hf.oracles.prompt import PROMPT_VERSION

__all__ = [
    "CATEGORIES",
    "PROMPT_VERSION",
    "AllStepsOracle",
    "Annotation",
    "AnthropicOracle",
    "LocalOracle",
    "Oracle",
    "PerplexityOracle",
    "RandomOracle",
    "validate_annotation",
]
