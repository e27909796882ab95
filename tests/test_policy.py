"""The rollout policy: `grouped_query_attention` computes what eager attention computes, and the key/value
cache lives in two reused buffers."""

from __future__ import annotations

import inspect
import math

import pytest
import torch

from atlas_hf._upstream import set_attn_implementation
from atlas_hf.evaluation.policy import ATTENTION, _preallocated_cache, _register_attention


def _gqa_model(attn: str):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=97,
        hidden_size=48,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=6,
        num_key_value_heads=2,
        max_position_embeddings=256,
        initializer_range=0.3,
        attn_implementation=attn,
    )
    return LlamaForCausalLM(config).eval()


def _tiny_chat_llama(tokenizer, initializer_range: float = 0.02):
    """A tiny random Llama over `tokenizer`'s vocabulary (wide weights give replies that depend on the prompt)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        initializer_range=initializer_range,
    )
    return LlamaForCausalLM(config).eval()


@pytest.mark.parametrize("new_tokens", [1, 5])
def test_grouped_attention_matches_eager_on_padded_rows_against_a_cache(new_tokens: int):
    _register_attention()
    eager, grouped = _gqa_model("eager"), _gqa_model("eager")
    set_attn_implementation(grouped.config, ATTENTION)
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
            cache = _preallocated_cache(12 + new_tokens + 4)  # a strided view of a larger buffer
            model(
                input_ids=prompt,
                attention_mask=mask,
                position_ids=positions[:, :12],
                use_cache=True,
                **{cache_arg: cache},
            )
            out = model(
                input_ids=new,
                attention_mask=full_mask,
                position_ids=positions[:, 12:],
                use_cache=True,
                **{cache_arg: cache},
            )
            logits.append(out.logits)
    assert logits[0].abs().max() > 0.1  # not a comparison of zeros
    torch.testing.assert_close(logits[1], logits[0], rtol=1e-4, atol=1e-5)


def test_rollout_keys_and_values_live_in_one_reused_buffer_per_layer(smol_tokenizer):
    """Over many turns the policy holds one key/value buffer per layer, at most 1.125x what the live
    conversations need (their longest prompt plus `max_new_tokens`, for every live row), rearranged in
    place as episodes end, a new one only when it grows past that, and replies as a policy that
    recomputes every conversation from scratch."""
    from atlas_hf.evaluation.policy import TransformersPolicy

    model = _tiny_chat_llama(smol_tokenizer, initializer_range=0.5)
    reused, fresh = (
        TransformersPolicy(model, smol_tokenizer, max_new_tokens=6),
        TransformersPolicy(model, smol_tokenizer, max_new_tokens=6, reuse_cache=False),
    )
    chats = {
        policy: [
            [{"role": "user", "content": f"Goal {i}: reach the {'red ' * i}door. " + "A room. " * 40}]
            for i in range(4)
        ]
        for policy in (reused, fresh)
    }
    per_position = 2 * 2 * 2 * 8 * 4  # layers x (keys, values) x kv heads x head dim x float32 bytes
    needed, first = 0, None
    for turn in range(10):
        live = 4 - turn // 4  # episodes end: the batch shrinks
        replies = {policy: policy(chats[policy][:live]) for policy in (reused, fresh)}
        assert replies[reused] == replies[fresh], turn
        for policy in (reused, fresh):
            for chat, reply in zip(chats[policy], replies[policy]):
                chat += [
                    {"role": "assistant", "content": reply or "left"},
                    {"role": "user", "content": "A wall. " * 3},
                ]
        needed = max(needed, max(len(reused._prompt_ids(c)) for c in chats[reused][:live]) + 6)
        first = first or needed
        assert reused.cache_bytes <= 1.125 * 4 * needed * per_position
    # buffers grow geometrically (x1.125): never a fresh allocation per turn
    assert reused.buffer_allocations <= 1 + math.log(needed / first) / math.log(1.125) < 10


def test_a_turn_that_fits_the_first_buffer_rearranges_it_in_place(smol_tokenizer):
    """The first call's buffers (made during inference) are written in place by the next call when they
    are big enough: no new allocation, the same reply as recomputing from scratch."""
    from atlas_hf.evaluation.policy import TransformersPolicy

    model = _tiny_chat_llama(smol_tokenizer)
    reused = TransformersPolicy(model, smol_tokenizer, max_new_tokens=4)
    fresh = TransformersPolicy(model, smol_tokenizer, max_new_tokens=4, reuse_cache=False)
    chat = [{"role": "user", "content": "A long first observation of the room and the task. " * 16}]
    chat += [{"role": "assistant", "content": reused([chat])[0] or "go"}, {"role": "user", "content": "Ok."}]
    assert reused([chat]) == fresh([chat])
    assert reused.buffer_allocations == 1


def test_on_reply_hears_each_row_that_stops_as_it_stops(smol_tokenizer):
    """`on_reply(row, reply)` comes for the rows that end on a stop token, with the reply later returned;
    rows cut at `max_new_tokens` are only returned."""
    from atlas_hf.evaluation.policy import TransformersPolicy, takes_on_reply

    model = _tiny_chat_llama(smol_tokenizer, initializer_range=0.5)
    chats = [[{"role": "user", "content": f"Goal {i}: reach the {'red ' * i}door."}] for i in range(4)]
    policy = TransformersPolicy(model, smol_tokenizer, max_new_tokens=5, reuse_cache=False)
    first_tokens = [smol_tokenizer(r, add_special_tokens=False)["input_ids"][:1] for r in policy(chats)]
    assert first_tokens[0] and len({tuple(t) for t in first_tokens}) > 1  # the rows begin differently
    policy.stop_ids = sorted(set(policy.stop_ids) | set(first_tokens[0]))  # row 0 now stops at once
    heard = {}
    replies = policy(chats, on_reply=lambda row, reply: heard.setdefault(row, reply))
    assert 0 in heard and heard[0] == replies[0] == ""
    assert all(replies[row] == reply for row, reply in heard.items())
    assert len(heard) < 4  # some rows ran to max_new_tokens and were only returned
    assert takes_on_reply(policy) and not takes_on_reply(lambda conversations: [])


def test_prompt_lookup_drafts_what_followed_the_latest_occurrence_of_the_last_tokens():
    from atlas_hf.evaluation.policy import PromptLookup

    assert PromptLookup([5, 6, 7, 8, 5, 6]).draft(3) == [7, 8, 5]
    lookup = PromptLookup([1, 2, 9, 1, 2, 8, 3, 1, 2], most=8, length=8)
    assert lookup.draft(2) == [8, 3]  # the latest "1 2" was followed by 8, the first by 9
    lookup.extend([8])
    assert lookup.draft(5) == [3, 1, 2, 8]  # "1 2 8" matched, the draft runs to the end of the sequence
    assert lookup.draft(0) == []
    assert PromptLookup([1, 2, 3, 4]).draft(4) == []  # nothing repeats: no draft
    assert PromptLookup([4, 1, 2, 3, 1]).draft(2) == []  # a single repeated token is not enough


def test_the_draft_grows_while_kept_whole_and_shrinks_when_not():
    from atlas_hf.evaluation.policy import PromptLookup

    lookup = PromptLookup(list(range(20)) * 2, most=8)  # every suffix repeats: drafts as long as allowed
    assert lookup.length == 4 and len(lookup.draft(100)) == 4
    lookup.checked(4, 4)
    assert len(lookup.draft(100)) == 6
    lookup.checked(6, 6), lookup.checked(8, 8)
    assert lookup.length == 8  # at most `most`
    lookup.checked(8, 3)
    assert lookup.length == 7
    lookup.checked(0, 0)  # no draft: no change
    assert lookup.length == 7
    for _ in range(10):
        lookup.checked(2, 0)
    assert lookup.length == 1 and len(lookup.draft(100)) == 1


def test_drafted_decoding_replies_as_greedy_decoding_in_fewer_forwards():
    """With one live episode, drafts read from the conversation are checked several tokens per forward.
    On the real SmolLM2 (which repeats its context) the replies are `generate`'s and those of one token
    per forward, turn after turn on a reused cache, in fewer forwards; some drafts are rejected."""
    from atlas_hf.evaluation.policy import TransformersPolicy
    from atlas_hf.models import load_model_and_tokenizer

    model, tokenizer = load_model_and_tokenizer(None, None, torch.float32)
    drafted = TransformersPolicy(model, tokenizer, max_new_tokens=24)
    plain = TransformersPolicy(model, tokenizer, max_new_tokens=24, draft_tokens=0)
    forwards = {drafted: 0, plain: 0}
    chat = [
        {"role": "user", "content": "You are in the kitchen. You see a fridge and a red apple. Task: cool the apple."}
    ]
    for turn in range(3):
        replies = {}
        for policy in (drafted, plain):
            hook = model.register_forward_hook(
                lambda *_, policy=policy: forwards.__setitem__(policy, forwards[policy] + 1)
            )
            try:
                replies[policy] = policy([chat])[0]
            finally:
                hook.remove()
        assert replies[drafted] == replies[plain], turn
        if turn == 0:
            prompt = tokenizer.apply_chat_template(
                chat, add_generation_prompt=True, return_tensors="pt", return_dict=True
            )
            output = model.generate(**prompt, max_new_tokens=24, do_sample=False, pad_token_id=tokenizer.pad_token_id)
            expected = tokenizer.decode(output[0, prompt["input_ids"].shape[1] :], skip_special_tokens=True).strip()
            assert replies[drafted] == expected
        chat += [
            {"role": "assistant", "content": replies[drafted]},
            {"role": "user", "content": "The fridge is closed."},
        ]
    assert 0 < drafted.accepted_tokens < drafted.drafted_tokens  # drafts were kept, and some were not
    assert plain.drafted_tokens == 0
    assert forwards[drafted] + drafted.accepted_tokens == forwards[plain]  # each kept token saved a forward
