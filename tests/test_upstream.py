"""The private details of TRL, transformers and the API SDKs that atlas_hf relies on (`atlas_hf._upstream`).

Each test fails with a message that says what the installed version changed and what to update, so an
upgrade breaks here, by name, before it breaks a user's run.
"""

from __future__ import annotations

import dataclasses
import inspect

import pytest
import torch

from atlas_hf import _upstream


def _tiny_llama(attn: str = "eager"):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=1,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        attn_implementation=attn,
    )
    return LlamaForCausalLM(config).eval()


def test_trl_fused_head_pieces_keep_the_names_and_fields_lm_head_uses():
    import trl

    kernel, output, gather = _upstream.trl_fused_head()
    used = {"hidden", "weight", "bias", "targets", "temperature", "chunk_size", "outputs"}
    params = set(inspect.signature(kernel.forward).parameters)
    assert used <= params, (
        f"trl {trl.__version__} renamed ChunkedLogProbFunction.forward's parameters "
        f"{sorted(used - params)}: update atlas_hf/training/lm_head.py"
    )
    fields = (
        {f.name for f in dataclasses.fields(output)}
        if dataclasses.is_dataclass(output)
        else set(output.__annotations__)
    )
    assert {"loss", "log_probs", "entropy"} <= fields, (
        f"trl {trl.__version__} changed FusedCausalLMOutput's fields ({sorted(fields)}): update lm_head.py"
    )
    weight = torch.zeros(3, 2)
    with gather(weight, None):  # a plain (unsharded) head passes through
        pass


def test_the_attention_knob_switches_the_attention_a_model_runs():
    from transformers import AttentionInterface
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    calls = []

    def probe(*args, **kwargs):
        calls.append(1)
        return sdpa_attention_forward(*args, **kwargs)

    AttentionInterface.register("atlas_upstream_probe", probe)
    model = _tiny_llama("sdpa")
    assert _upstream.attn_implementation(model.config) == "sdpa"
    ids = torch.tensor([[1, 2, 3, 4]])
    before = model(input_ids=ids).logits
    _upstream.set_attn_implementation(model.config, "atlas_upstream_probe")
    after = model(input_ids=ids).logits
    assert calls, (
        "setting config._attn_implementation no longer switches the attention transformers runs: "
        "update atlas_hf._upstream.set_attn_implementation (the rollout policy relies on it)"
    )
    torch.testing.assert_close(before, after)
    _upstream.set_attn_implementation(model.config, "sdpa")
    assert _upstream.attn_implementation(model.config) == "sdpa"


def test_trl_still_refuses_a_custom_collator_with_padding_free(tmp_path):
    """While it does, AtlasSFTTrainer hands TRL a copy of the config without padding_free."""
    import trl
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    from atlas_hf import CriticalStepDataCollator, load_default_tokenizer

    tokenizer = load_default_tokenizer()
    rows = Dataset.from_list([{"input_ids": [1, 2, 3], "completion_mask": [0, 1, 1]}])
    args = SFTConfig(
        output_dir=str(tmp_path),
        padding_free=True,
        report_to="none",
        use_cpu=True,
        dataset_kwargs={"skip_prepare_dataset": True},
        remove_unused_columns=False,
    )
    try:
        SFTTrainer(
            _tiny_llama(),
            args=args,
            train_dataset=rows,
            processing_class=tokenizer,
            data_collator=CriticalStepDataCollator(tokenizer, padding_free=True),
        )
    except ValueError as err:
        assert "padding_free" in str(err) or "padding-free" in str(err)
    else:
        pytest.fail(
            f"trl {trl.__version__} now accepts a custom collator with padding_free=True: drop "
            "atlas_hf._upstream.trl_args_without_padding_free and pass the config through"
        )
    copy = _upstream.trl_args_without_padding_free(args)
    assert copy.padding_free is False and args.padding_free is True and type(copy) is type(args)
    assert copy.output_dir == args.output_dir


@pytest.mark.parametrize("sdk", ["anthropic", "openai"])
def test_the_sdks_retry_wait_hook_keeps_its_signature(sdk):
    module = pytest.importorskip(sdk)
    client = module.Anthropic if sdk == "anthropic" else module.OpenAI
    hook = getattr(client, "_calculate_retry_timeout", None)
    assert hook is not None, f"{sdk} {module.__version__} has no _calculate_retry_timeout: update CappedRetryAfter"
    assert list(inspect.signature(hook).parameters)[:4] == [
        "self",
        "remaining_retries",
        "options",
        "response_headers",
    ], f"{sdk} {module.__version__} changed _calculate_retry_timeout's signature: update CappedRetryAfter"
