"""The rollout policy's attention: `grouped_query_attention` computes what eager attention computes."""

from __future__ import annotations

import inspect

import pytest
import torch

from atlas_hf.policy import ATTENTION, _preallocated_cache, _register_attention


def _gqa_model(attn: str):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=97, hidden_size=48, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=6, num_key_value_heads=2, max_position_embeddings=256,
                         initializer_range=0.3, attn_implementation=attn)
    return LlamaForCausalLM(config).eval()


@pytest.mark.parametrize("new_tokens", [1, 5])
def test_grouped_attention_matches_eager_on_padded_rows_against_a_cache(new_tokens: int):
    _register_attention()
    eager, grouped = _gqa_model("eager"), _gqa_model("eager")
    grouped.config._attn_implementation = ATTENTION
    assert torch.equal(eager.model.embed_tokens.weight, grouped.model.embed_tokens.weight)
    torch.manual_seed(1)
    prompt = torch.randint(0, 97, (3, 12))
    mask = torch.ones(3, 12, dtype=torch.long)
    mask[0, :4] = 0  # left padding of different lengths
    mask[2, :7] = 0
    new = torch.randint(0, 97, (3, new_tokens))
    full_mask = torch.cat([mask, torch.ones(3, new_tokens, dtype=torch.long)], dim=1)
    positions = (full_mask.cumsum(-1) - 1).clamp(min=0)
    logits = []
    cache_arg = "cache" if "cache" in inspect.signature(type(eager).forward).parameters else "past_key_values"
    with torch.inference_mode():
        for model in (eager, grouped):
            cache = _preallocated_cache(None, 12 + new_tokens + 4)  # a strided view of a larger buffer
            model(input_ids=prompt, attention_mask=mask, position_ids=positions[:, :12], use_cache=True,
                  **{cache_arg: cache})
            out = model(input_ids=new, attention_mask=full_mask, position_ids=positions[:, 12:], use_cache=True,
                        **{cache_arg: cache})
            logits.append(out.logits)
    assert logits[0].abs().max() > 0.1  # not a comparison of zeros
    torch.testing.assert_close(logits[1], logits[0], rtol=1e-4, atol=1e-5)
