"""LocalOracle and PerplexityOracle on tiny random Llama models with a byte-level tokenizer."""

from __future__ import annotations

import math
import pickle
from typing import Any

import pytest
import torch
from datasets import Dataset
from datasets.fingerprint import Hasher
from tokenizers import Tokenizer, decoders, models
from tokenizers.pre_tokenizers import ByteLevel
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from atlas_hf.annotation.annotator import CriticalStepAnnotator
from atlas_hf.annotation.oracles.base import CATEGORIES, validate_annotation
from atlas_hf.annotation.oracles.baselines import PerplexityOracle
from atlas_hf.annotation.oracles.local import LocalOracle
from atlas_hf.annotation.oracles.rendering import clip_ids_middle, fit_turns
from atlas_hf.trajectories.schema import max_selected_steps
from test_annotate import real_rows, trajectory


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    """One token per byte: any text encodes, nothing to download."""
    vocab = {c: i + 3 for i, c in enumerate(sorted(ByteLevel.alphabet()))}
    vocab.update({"<pad>": 0, "<s>": 1, "</s>": 2})
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = ByteLevel(add_prefix_space=False, use_regex=False)
    backend.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>", pad_token="<pad>")


def tiny_llama(tokenizer: Any, seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
    )
    return LlamaForCausalLM(config).eval()


def biased_toward(model: LlamaForCausalLM, token_id: int, strength: float = 8.0) -> LlamaForCausalLM:
    """The model, made to predict `token_id` everywhere (zero weights, a bias on that one token)."""
    head = torch.nn.Linear(model.config.hidden_size, model.config.vocab_size, bias=True)
    with torch.no_grad():
        head.weight.zero_()
        head.bias.zero_()
        head.bias[token_id] = strength
    model.lm_head = head
    return model


@pytest.fixture(scope="module")
def model(tokenizer: Any) -> LlamaForCausalLM:
    return tiny_llama(tokenizer)


def step_perplexity_directly(model: Any, tokenizer: Any, messages: list[dict[str, Any]]) -> list[float]:
    """Each step's perplexity from its own unpadded forward pass over `User: ...` / `Assistant: ...` text."""
    out, context = [], ""
    for m in messages:
        if m["role"] != "assistant":
            context += f"User: {m['content']}\n"
            continue
        prefix = tokenizer(context + "Assistant:", add_special_tokens=True)["input_ids"]
        target = tokenizer(f" {m['content']}\n", add_special_tokens=False)["input_ids"]
        ids = torch.tensor([prefix + target])
        with torch.no_grad():
            logits = model(input_ids=ids).logits[0, len(prefix) - 1 : -1]
        nll = torch.nn.functional.cross_entropy(logits.float(), torch.tensor(target))
        out.append(math.exp(nll.item()))
        context += f"Assistant: {m['content']}\n"
    return out


def test_perplexity_matches_a_direct_per_step_computation(model: Any, tokenizer: Any) -> None:
    data = [trajectory("short", 2), trajectory("a much longer task description", 6), trajectory("mid", 4)]
    oracle = PerplexityOracle(model, tokenizer, batch_size=2)  # padded batches of unequal lengths
    got = oracle.step_perplexities(data)
    for messages, ppl in zip(data, got):
        assert ppl == pytest.approx(step_perplexity_directly(model, tokenizer, messages), rel=1e-4)
    for messages, ppl, a in zip(data, got, oracle.annotate(data, 0.34)):
        top = sorted(range(len(ppl)), key=lambda k: -ppl[k])[: max_selected_steps(len(ppl), 0.34)]
        assert a.steps == sorted(top) and a.reasons == [f"perplexity {ppl[k]:.1f}" for k in a.steps]
        assert validate_annotation(a, len(ppl), 0.34) is None and a.categories[0] == "Critical Action"


def test_perplexity_picks_the_steps_the_model_cannot_predict(tokenizer: Any) -> None:
    a_id = tokenizer("a", add_special_tokens=False)["input_ids"][0]
    model = biased_toward(tiny_llama(tokenizer), a_id)  # "aaaa" is easy, anything else is not
    easy, hard = "a" * 30, "qzx vjk wpf gh!"
    messages = [{"role": "user", "content": "Task"}]
    for k, text in enumerate([easy, easy, hard, easy, hard, easy]):
        messages += [{"role": "assistant", "content": text}, {"role": "user", "content": f"obs {k}"}]
    oracle = PerplexityOracle(model, tokenizer)
    assert oracle.annotate([messages], 1 / 6)[0].steps in ([2], [4])
    assert oracle.annotate([messages], 2 / 6)[0].steps == [2, 4]


def test_local_oracle_respects_the_cap_and_the_categories(model: Any, tokenizer: Any) -> None:
    oracle = LocalOracle(model, tokenizer, max_length=1024, batch_size=5)
    data = [trajectory(f"t{n}", n) for n in (1, 3, 7)]
    data[1][3] = {
        "role": "assistant",
        "content": None,
        "tool_calls": [{"type": "function", "function": {"name": "search", "arguments": '{"q": 1}'}}],
    }
    for messages, a in zip(data, oracle.annotate(data, 0.3)):
        n = sum(m["role"] == "assistant" for m in messages)
        assert validate_annotation(a, n, 0.3) is None and len(a.steps) == max_selected_steps(n, 0.3)
        assert set(a.categories) <= set(CATEGORIES) and all(r.startswith("P(yes)=") for r in a.reasons)
    assert oracle.annotate([[{"role": "user", "content": "hi"}]], 0.3)[0].error


def test_local_oracle_scores_do_not_depend_on_the_question_batching(model: Any, tokenizer: Any) -> None:
    messages = trajectory("batching", 5)
    one = LocalOracle(model, tokenizer, batch_size=1).scores(messages)
    many = LocalOracle(model, tokenizer, batch_size=7).scores(messages)
    assert len(one) == 5 and all(len(row) == len(CATEGORIES) for row in one)
    assert torch.allclose(torch.tensor(one), torch.tensor(many), atol=1e-5)
    # the cached prefix + question equals one plain forward pass over the whole prompt
    oracle = LocalOracle(model, tokenizer)
    yes_id, no_id, answer_prefix = oracle._answer_tokens()
    question = oracle._encode("\nQuestion: Is step 3 a Self Correction step? Answer yes or no.\nAnswer:")
    longest = max(
        len(oracle._encode(f"\nQuestion: Is step {k} a {c} step? Answer yes or no.\nAnswer:"))
        for k in range(5)
        for c in CATEGORIES
    ) + len(answer_prefix)
    ids = oracle._prefix_ids(messages, longest) + question + answer_prefix
    with torch.no_grad():
        pair = model(input_ids=torch.tensor([ids])).logits[0, -1, [yes_id, no_id]]
    assert one[3][CATEGORIES.index("Self Correction")] == pytest.approx(torch.softmax(pair, -1)[0].item(), abs=1e-5)


def test_local_oracle_threshold(tokenizer: Any) -> None:
    yes_id = tokenizer("y", add_special_tokens=False)["input_ids"][0]  # " yes" vs " no" differ at y / n
    no_id = tokenizer("n", add_special_tokens=False)["input_ids"][0]
    messages = trajectory("threshold", 10)
    says_yes = LocalOracle(biased_toward(tiny_llama(tokenizer), yes_id), tokenizer, threshold=0.5)
    says_no = LocalOracle(biased_toward(tiny_llama(tokenizer), no_id), tokenizer, threshold=0.5)
    assert len(says_yes.annotate([messages], 0.3)[0].steps) == 3  # every step is a yes: the cap decides
    assert len(says_no.annotate([messages], 0.3)[0].steps) == 1  # no step is a yes: still at least one
    assert len(LocalOracle(says_no._model, tokenizer).annotate([messages], 0.3)[0].steps) == 3  # no threshold


def test_long_trajectories_are_clipped_in_the_middle_never_dropped(model: Any, tokenizer: Any) -> None:
    turns = [list(range(100)), list(range(5)), list(range(300)), list(range(40))]
    fitted = fit_turns(turns, 150, [True, False, True, False], marker=[-1])
    assert sum(map(len, fitted)) <= 150 and len(fitted) == 4 and fitted[1] == turns[1] and fitted[3] == turns[3]
    assert fitted[0][0] == 0 and fitted[0][-1] == 99 and -1 in fitted[0] and len(fitted[0]) == len(fitted[2])
    assert clip_ids_middle(list(range(10)), 5, [-1]) == [0, 1, -1, 8, 9]
    messages = [
        {"role": "user", "content": "x" * 3000},
        {"role": "assistant", "content": "first"},
        {"role": "tool", "name": "db", "content": "y" * 3000},
        {"role": "assistant", "content": "second"},
    ]
    oracle = LocalOracle(model, tokenizer, max_length=1024)
    assert len(oracle._prefix_ids(messages, 64)) <= 1024 - 64
    assert len(oracle.scores(messages)) == 2
    with pytest.raises(ValueError, match="max_length=512 leaves .* raise max_length"):
        LocalOracle(model, tokenizer, max_length=512).scores(messages)
    assert len(PerplexityOracle(model, tokenizer, max_length=256).step_perplexities([messages])[0]) == 2


def test_identity_names_the_model_and_pickles_stably(tokenizer: Any) -> None:
    named = tiny_llama(tokenizer)
    named.config._name_or_path = "org/tiny-judge"
    assert "org/tiny-judge" in LocalOracle(named, tokenizer).identity
    assert "org/tiny-judge" in PerplexityOracle(named, tokenizer).identity
    same, other = tiny_llama(tokenizer, seed=0), tiny_llama(tokenizer, seed=1)
    assert LocalOracle(same, tokenizer).identity == LocalOracle(tiny_llama(tokenizer, 0), tokenizer).identity
    assert LocalOracle(same, tokenizer).identity != LocalOracle(other, tokenizer).identity
    assert LocalOracle(same, tokenizer).identity != LocalOracle(same, tokenizer, threshold=0.7).identity
    oracle = LocalOracle(same, tokenizer, max_length=1024)
    before = Hasher.hash(CriticalStepAnnotator(oracle, progress=False))
    oracle.annotate([trajectory("p", 2)], 0.5)
    assert Hasher.hash(CriticalStepAnnotator(oracle, progress=False)) == before
    restored = pickle.loads(pickle.dumps(oracle))
    assert torch.allclose(
        torch.tensor(restored.scores(trajectory("p", 2))), torch.tensor(oracle.scores(trajectory("p", 2)))
    )
    with pytest.raises(ValueError, match="no tokenizer"):
        LocalOracle(same)


def test_default_model_is_loaded_lazily_and_left_out_of_pickles() -> None:
    oracle = LocalOracle()
    assert oracle._model is None and "SmolLM2-135M-Instruct" in oracle.identity
    oracle._model, oracle._tokenizer = object(), object()  # as if loaded: a worker loads its own
    assert pickle.loads(pickle.dumps(oracle))._model is None


@pytest.mark.parametrize("oracle_kind", ["local", "perplexity"])
def test_annotator_with_a_tiny_local_model_on_the_real_data(oracle_kind: str, model: Any, tokenizer: Any) -> None:
    data = real_rows(3)
    if oracle_kind == "local":
        oracle: Any = LocalOracle(model, tokenizer, max_length=1536, batch_size=32)
    else:
        oracle = PerplexityOracle(model, tokenizer, max_length=768)
    annotator = CriticalStepAnnotator(oracle, progress=False)
    out = Dataset.from_list(data).map(annotator, batched=True, batch_size=3)
    assert annotator.stats.sent == len(data) and annotator.stats.errors == 0
    for row in out:
        n = sum(m["role"] == "assistant" for m in row["messages"])
        assert row["atlas_error"] == "" and 1 <= len(row["critical_steps"]) <= max_selected_steps(n, 0.3)
        assert (
            set(row["critical_categories"]) <= set(CATEGORIES)
            and row["atlas_oracle"] == f"{oracle.identity[:-1]}, max_ratio=0.3)"
        )


@pytest.mark.slow
def test_default_smollm2_judge_and_base_model() -> None:
    pytest.importorskip("gguf", reason="loading the embedded SmolLM2 GGUF needs the `gguf` package")
    messages = [
        {"role": "user", "content": "Which city is the capital of France?"},
        {"role": "assistant", "content": "Thought: I should look it up.\nAction: search[capital of France]"},
        {"role": "user", "content": "Observation: Paris is the capital and largest city of France."},
        {"role": "assistant", "content": "Thought: The observation answers it.\nAction: finish[Paris]"},
        {"role": "user", "content": "Observation: Episode finished, reward = True"},
        {"role": "assistant", "content": "Thought: Done.\nAction: finish[Paris]"},
    ]
    for oracle in (LocalOracle(max_length=1024), PerplexityOracle()):
        assert "HuggingFaceTB/SmolLM2-135M-Instruct" in oracle.identity
        [a] = oracle.annotate([messages], 0.5)
        assert validate_annotation(a, 3, 0.5) is None and len(a.steps) == 1


def test_claude_and_the_local_judges_read_the_same_steps_and_definitions(model: Any, tokenizer: Any) -> None:
    """Each step's text (content parts joined as the trainer joins them, tool calls with their JSON
    arguments) shows under the same number in the Claude prompt, the local judge's prefix and the
    perplexity baseline's text; each reader gets its own form of the same four definitions."""
    from atlas_hf.annotation.oracles.prompt import SYSTEM_PROMPT, render_trajectory_for_oracle
    from atlas_hf.annotation.oracles.rendering import CATEGORY_DEFINITIONS
    from atlas_hf.trajectories.schema import check_messages

    messages = [
        {"role": "user", "content": [{"type": "text", "text": "Find the "}, {"type": "text", "text": "capital."}]},
        {
            "role": "assistant",
            "content": "I will search.",
            "tool_calls": [
                {"type": "function", "function": {"name": "search", "arguments": {"q": "capital", "limit": 3}}}
            ],
        },
        {"role": "tool", "name": "search", "content": "Paris is the capital."},
        {"role": "assistant", "content": "Paris."},
    ]
    trained_text = [m["content"] for m in check_messages(messages) if m["role"] == "assistant"]
    arguments = '{"q": "capital", "limit": 3}'
    claude = render_trajectory_for_oracle(messages)
    local = tokenizer.decode(LocalOracle(model, tokenizer)._prefix_ids(messages, budget_for_questions=0))
    ids, spans = PerplexityOracle(model, tokenizer)._encode_trajectory(messages)
    scored = [tokenizer.decode(ids[s:e]).strip() for s, e in spans]

    assert "Find the capital." in claude and "Find the capital." in local
    assert f"### Step 0\n{trained_text[0]}\nTool call: search({arguments})\n\n" in claude
    assert f"### Step 1\n{trained_text[1]}" in claude
    assert f"[Step 0] Assistant: {trained_text[0]}\ncall search({arguments})\n" in local
    assert f"[Step 1] Assistant: {trained_text[1]}\n" in local
    assert scored == [f"{trained_text[0]}\ncall search({arguments})", trained_text[1]]
    for name, definition in CATEGORY_DEFINITIONS.items():
        assert f"- {name}: {definition.full}" in SYSTEM_PROMPT
        assert f"- {name}: {definition.brief}." in local


PINNED_LOCAL_PROMPTS = {
    "local-yes-no-v2": "1e50bbb23f23cefe95fd6c4ed5d8738c87ae5282f38cd849a31c30077fc321b2",
    "plain-v2": "a364c28cddcaaee607352966d34a0d36b902f373df7d6a7bbfc37afb4faf15ed",
}
"""sha256 of the local judge's prefix and the perplexity baseline's text for the 13 sample trajectories
(byte-level tokenizer, so the decoded ids are the text), per version."""


def _local_prompt_hashes(model: Any, tokenizer: Any) -> dict[str, str]:
    import hashlib

    from atlas_hf.annotation.oracles.baselines import PERPLEXITY_LAYOUT
    from atlas_hf.annotation.oracles.local import PROMPT_VERSION
    from atlas_hf.trajectories.sample import load_sample

    rows = [row["messages"] for row in load_sample()]
    judge, ppl = LocalOracle(model, tokenizer, max_length=8192), PerplexityOracle(model, tokenizer, max_length=8192)
    judged = "".join(tokenizer.decode(judge._prefix_ids(m, budget_for_questions=0)) for m in rows)
    scored = "".join(tokenizer.decode(ppl._encode_trajectory(m)[0]) for m in rows)
    return {
        PROMPT_VERSION: hashlib.sha256(judged.encode()).hexdigest(),
        PERPLEXITY_LAYOUT: hashlib.sha256(scored.encode()).hexdigest(),
    }


def test_the_local_prompts_are_pinned_to_their_versions(model: Any, tokenizer: Any) -> None:
    """As for Claude's prompt: the local judge's text and the perplexity baseline's change only with a
    new version in their identity (so in the cache key). Change one, bump it, pin the new hash."""
    hashes = _local_prompt_hashes(model, tokenizer)
    assert hashes == {version: PINNED_LOCAL_PROMPTS.get(version) for version in hashes}
