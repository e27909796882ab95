"""Shared fixtures: the real data beside the checkout, and chat tokenizers with several templates."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
FIREACT = SHARED_DATA / "fireact" / "hotpotqa.jsonl"
TAU_BENCH = SHARED_DATA / "tau-bench" / "gpt-4o-airline.json"

# Templates written for these tests, each in the style of a model family.
LLAMA3_STYLE = (
    "{{ '<|begin_of_text|>' }}"
    "{% for m in messages %}"
    "{{ '<|start_header_id|>' + m['role'] + '<|end_header_id|>\n\n' + (m['content'] or '') | trim + '<|eot_id|>' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)

QWEN_STYLE_TOOLS = (
    "{% if messages[0]['role'] == 'system' %}{% set sys = messages[0]['content'] %}{% set rest = messages[1:] %}"
    "{% else %}{% set sys = 'You are a capable assistant that uses tools.' %}{% set rest = messages %}{% endif %}"
    "{{ '<|im_start|>system\n' + sys }}"
    "{% if tools %}{{ '\n\nTools you may call:\n<tools>' }}{% for t in tools %}{{ '\n' + (t | tojson) }}{% endfor %}"
    "{{ '\n</tools>' }}{% endif %}{{ '<|im_end|>\n' }}"
    "{% for m in rest %}"
    "{% if m['role'] == 'assistant' %}"
    "{{ '<|im_start|>assistant\n' + (m['content'] or '') }}"
    "{% for c in m.get('tool_calls') or [] %}"
    "{{ '\n<tool_call>\n{\"name\": \"' + c['function']['name'] + '\", \"arguments\": ' }}"
    "{% if c['function']['arguments'] is string %}{{ c['function']['arguments'] }}"
    "{% else %}{{ c['function']['arguments'] | tojson }}{% endif %}{{ '}\n</tool_call>' }}"
    "{% endfor %}{{ '<|im_end|>\n' }}"
    "{% elif m['role'] == 'tool' %}"
    "{{ '<|im_start|>user\n<tool_response>\n' + m['content'] + '\n</tool_response><|im_end|>\n' }}"
    "{% else %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

END_OF_TURN = {"smollm2": "<|im_end|>", "llama3": "<|eot_id|>", "qwen_tools": "<|im_end|>"}


def read_fireact(limit: int | None = None) -> list[dict]:
    if not FIREACT.exists():
        pytest.skip(f"real data not found at {FIREACT} (../shared/data is not beside this checkout)")
    with FIREACT.open() as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return rows[:limit]


def read_tau_bench(limit: int | None = None) -> list[dict]:
    if not TAU_BENCH.exists():
        pytest.skip(f"real data not found at {TAU_BENCH} (../shared/data is not beside this checkout)")
    return json.loads(TAU_BENCH.read_text())[:limit]


@pytest.fixture(scope="session")
def smol_tokenizer():
    """The real SmolLM2-135M-Instruct tokenizer (its template injects a default system prompt)."""
    from atlas_hf.models import load_default_tokenizer

    return load_default_tokenizer()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, smol_tokenizer) -> Path:
    """A tiny random Llama with the SmolLM2 tokenizer, saved as a model folder. Its weights are drawn
    wide (initializer_range=0.5) so that per-token losses differ a lot from token to token."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    folder = tmp_path_factory.mktemp("tiny-llama")
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(smol_tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        initializer_range=0.5,
        pad_token_id=smol_tokenizer.pad_token_id,
        eos_token_id=smol_tokenizer.eos_token_id,
        bos_token_id=smol_tokenizer.bos_token_id,
    )
    LlamaForCausalLM(config).save_pretrained(folder)
    smol_tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def chat_tokenizers(smol_tokenizer):
    """name -> tokenizer: SmolLM2's own template, a Llama-3 style one, a Qwen style one with tools."""
    llama = copy.deepcopy(smol_tokenizer)
    llama.add_special_tokens(
        {"additional_special_tokens": ["<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]}
    )
    llama.chat_template = LLAMA3_STYLE
    qwen = copy.deepcopy(smol_tokenizer)
    qwen.chat_template = QWEN_STYLE_TOOLS
    return {"smollm2": smol_tokenizer, "llama3": llama, "qwen_tools": qwen}
