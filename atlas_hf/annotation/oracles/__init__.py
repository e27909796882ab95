"""Oracles that choose the critical steps of trajectories: Claude, local models, the paper's baselines.

One module per oracle: `base` (the protocol and the answer), `rendering` (how every oracle reads a
trajectory: turn text, step numbers, the four definitions), `prompt` (the Claude selector prompt),
`anthropic` (with `anthropic_config`, `message_batches` and `pricing`), `local`
(with `local_model`, the model holder it shares with the perplexity baseline), `baselines`;
`registry` builds them by name (`build_oracle("local")`), each module registering its own with what
it is (`oracle_info("random").kind == "baseline"`).
Names are imported on first use, so `atlas_hf.annotation.oracles.RandomOracle` loads neither the Anthropic
SDK nor torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from atlas_hf._lazy import lazy_exports

_EXPORTS: dict[str, str] = {
    "CATEGORIES": "atlas_hf.annotation.oracles.base",
    "Annotation": "atlas_hf.annotation.oracles.base",
    "Oracle": "atlas_hf.annotation.oracles.base",
    "validate_annotation": "atlas_hf.annotation.oracles.base",
    "PROMPT_VERSION": "atlas_hf.annotation.oracles.prompt",
    "AnthropicOracle": "atlas_hf.annotation.oracles.anthropic",
    "AnthropicOracleConfig": "atlas_hf.annotation.oracles.anthropic_config",
    "ModelPrice": "atlas_hf.annotation.oracles.pricing",
    "LocalOracle": "atlas_hf.annotation.oracles.local",
    "OpenAIChatOracle": "atlas_hf.annotation.oracles.openai_chat",
    "OpenAIOracleConfig": "atlas_hf.annotation.oracles.openai_chat",
    "AllStepsOracle": "atlas_hf.annotation.oracles.baselines",
    "PerplexityOracle": "atlas_hf.annotation.oracles.baselines",
    "RandomOracle": "atlas_hf.annotation.oracles.baselines",
    "build_oracle": "atlas_hf.annotation.oracles.registry",
    "default_oracle_name": "atlas_hf.annotation.oracles.registry",
    "list_oracles": "atlas_hf.annotation.oracles.registry",
    "oracle_info": "atlas_hf.annotation.oracles.registry",
    "OracleInfo": "atlas_hf.annotation.oracles.registry",
    "register_oracle": "atlas_hf.annotation.oracles.registry",
}

__all__ = list(_EXPORTS)

if TYPE_CHECKING:
    from atlas_hf.annotation.oracles.anthropic import AnthropicOracle
    from atlas_hf.annotation.oracles.anthropic_config import AnthropicOracleConfig
    from atlas_hf.annotation.oracles.base import CATEGORIES, Annotation, Oracle, validate_annotation
    from atlas_hf.annotation.oracles.baselines import AllStepsOracle, PerplexityOracle, RandomOracle
    from atlas_hf.annotation.oracles.local import LocalOracle
    from atlas_hf.annotation.oracles.openai_chat import OpenAIChatOracle, OpenAIOracleConfig
    from atlas_hf.annotation.oracles.pricing import ModelPrice
    from atlas_hf.annotation.oracles.prompt import PROMPT_VERSION
    from atlas_hf.annotation.oracles.registry import (
        OracleInfo,
        build_oracle,
        default_oracle_name,
        list_oracles,
        oracle_info,
        register_oracle,
    )


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
