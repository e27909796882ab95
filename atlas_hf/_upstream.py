"""Every reliance on a private detail of TRL, transformers or the API SDKs, in one place.

Each one has a test in `tests/test_upstream.py` that fails with a message naming what changed and
which use here to update, so an upgrade that moves one is caught by `make test`, not by a user.
Heavy libraries are imported inside the functions: `import atlas_hf` loads none of them.
"""

from __future__ import annotations

import copy
from typing import Any

MAX_RETRY_AFTER = 60.0
"""The longest `retry-after` the API clients wait before retrying; longer asks are cut to it."""


def trl_fused_head() -> tuple[Any, Any, Any]:
    """TRL's pieces of its fused LM head, which live in private modules (`trl.kernels`, `trl.trainer.utils`).

    Returns:
        `tuple`: `ChunkedLogProbFunction` (the chunked log-probability autograd function),
        `FusedCausalLMOutput` (what TRL's loss reads) and `maybe_gather_lm_head_ctx` (gathers a
        sharded head's weights), used by `atlas_hf.training.lm_head`.
    """
    from trl.kernels import ChunkedLogProbFunction
    from trl.trainer.utils import FusedCausalLMOutput, maybe_gather_lm_head_ctx

    return ChunkedLogProbFunction, FusedCausalLMOutput, maybe_gather_lm_head_ctx


def attn_implementation(config: Any) -> str | None:
    """The attention a loaded model runs (`config._attn_implementation`; transformers has no public getter).

    Args:
        config (`PretrainedConfig`): The model's config.

    Returns:
        `str | None`: e.g. `"sdpa"`, `"eager"`, or an `AttentionInterface` name.
    """
    return getattr(config, "_attn_implementation", None)


def set_attn_implementation(config: Any, name: str | None) -> None:
    """Switch a loaded model's attention for its next forward, without `model.set_attn_implementation`'s
    checks and submodule walk (the rollout policy switches twice a call).

    Args:
        config (`PretrainedConfig`): The model's config.
        name (`str`, *optional*): An attention registered with transformers' `AttentionInterface`.
    """
    config._attn_implementation = name


def trl_args_without_padding_free(args: Any) -> Any:
    """A shallow copy of a TRL config with `padding_free=False`, for `SFTTrainer.__init__`.

    TRL refuses a custom data collator together with `padding_free=True`; atlas_hf's collator does
    the concatenation itself, so TRL gets this copy and the user's config stays as given. `copy.copy`
    does not run `__post_init__` again (which would redo the distributed set-up).

    Args:
        args (`SFTConfig`): The user's config.

    Returns:
        `SFTConfig`: The copy.
    """
    trl_args = copy.copy(args)
    trl_args.padding_free = False
    return trl_args


class CappedRetryAfter:
    """Mixin for the `anthropic` and `openai` SDK clients: the SDK's own retry schedule, with a server's
    `retry-after` capped at `MAX_RETRY_AFTER` (the SDKs' `_calculate_retry_timeout` is private)."""

    def _calculate_retry_timeout(self, remaining_retries: int, options: Any, response_headers: Any = None) -> float:
        wait = super()._calculate_retry_timeout(remaining_retries, options, response_headers)  # type: ignore[misc]
        return min(wait, MAX_RETRY_AFTER)
