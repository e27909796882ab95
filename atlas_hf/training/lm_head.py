"""The supervised-only LM head: logits and cross-entropy at the supervised positions only.

TRL's fused head compacts the positions to score on Triton devices only; elsewhere it scores every
position of every row. With 30% of a trajectory's turns supervised, most of that work is wasted.
`add_supervised_lm_head` gives a model a forward that keeps the hidden states whose next-token
label is not -100 and scores just those, with TRL's chunked log-probability kernel, returning
what TRL's loss expects.
"""

from __future__ import annotations

import functools
import inspect
import types
from typing import Any

import torch
from atlas_hf._upstream import trl_fused_head
from atlas_hf.training.labeller import IGNORE_INDEX

ChunkedLogProbFunction, FusedCausalLMOutput, maybe_gather_lm_head_ctx = trl_fused_head()

_HEAD_OUTPUTS = ("log_probs", "entropy", "is_top1")
_VOCAB_CHUNK = 32768
# Config attributes that change how logits are computed from the LM head; models that set any of them
# keep TRL's own fused head, which knows how to apply them.
_LOGIT_TRANSFORMS = (
    "final_logit_softcapping",
    "logit_scale",
    "output_multiplier",
    "lm_head_multiplier",
    "logits_scaling",
)
_KERNEL_SIGNATURE = inspect.signature(ChunkedLogProbFunction.forward)


def _chunked_log_probs(**arguments: Any) -> tuple[Any, ...]:
    """`ChunkedLogProbFunction.apply` with its arguments named (autograd functions take them positionally)."""
    bound = _KERNEL_SIGNATURE.bind(None, **arguments)  # `None` stands for the autograd context
    bound.apply_defaults()
    return ChunkedLogProbFunction.apply(*list(bound.arguments.values())[1:])


def add_supervised_lm_head(model: Any) -> bool:
    """Make `model(..., labels=..., fused_lm_head=True)` project only the supervised positions.

    Call it after TRL's `add_fused_lm_head` on the same (unwrapped) model: the forward it installs runs
    the backbone, keeps the hidden states whose next-token label is not -100, and scores them with TRL's
    chunked log-probability kernel, returning TRL's `FusedCausalLMOutput` (same fields, zero on ignored
    positions). Cases it does not cover (pre-shifted labels, MoE router losses, logit scaling or
    soft-capping, sharded heads) go to TRL's forward. Returns whether the head was installed.
    """
    text_config = model.config.get_text_config()
    if any(getattr(text_config, name, None) is not None for name in _LOGIT_TRANSFORMS):
        return False
    trl_forward = model.forward

    @functools.wraps(type(model).forward)
    def forward(
        self: Any,
        *args: Any,
        fused_lm_head: bool = False,
        labels: torch.Tensor | None = None,
        shift_labels: torch.Tensor | None = None,
        num_items_in_batch: Any = None,
        **kwargs: Any,
    ) -> Any:
        lm_head = self.get_output_embeddings()
        if (
            not fused_lm_head
            or labels is None
            or shift_labels is not None
            or kwargs.get("output_router_logits")
            or getattr(text_config, "output_router_logits", False)
            or type(lm_head.weight).__name__ == "DTensor"
        ):
            return trl_forward(
                *args,
                fused_lm_head=fused_lm_head,
                labels=labels,
                shift_labels=shift_labels,
                num_items_in_batch=num_items_in_batch,
                **kwargs,
            )
        kwargs["use_cache"] = False
        hidden_states = self.base_model(*args, **kwargs).last_hidden_state[:, :-1]
        weight, bias = lm_head.weight, lm_head.bias
        hidden_states = hidden_states.to(weight.device)
        targets = labels[:, 1:].to(weight.device)
        mask = targets != IGNORE_INDEX
        with maybe_gather_lm_head_ctx(weight, bias):
            per_token = _chunked_log_probs(
                hidden=hidden_states[mask],
                weight=weight,
                bias=bias,
                targets=targets[mask],
                temperature=1.0,
                chunk_size=_VOCAB_CHUNK,
                outputs=_HEAD_OUTPUTS,
            )
        # `masked_scatter` keeps an all-ignored batch connected to the graph (a differentiable zero).
        log_probs, entropy, _, _, is_top1 = (
            None if x is None else x.new_zeros(mask.shape).masked_scatter(mask, x) for x in per_token
        )
        denominator = mask.sum().clamp(min=1) if num_items_in_batch is None else num_items_in_batch
        return FusedCausalLMOutput(
            loss=-log_probs.sum() / denominator,
            log_probs=log_probs,
            entropy=entropy,
            is_top1=is_top1,
            label_mask=mask,
        )

    model.forward = types.MethodType(forward, model)
    return True
