"""The real chat templates TRL ships, set on the embedded tokenizer, and the independent truth of their labels.

Used by `tests/test_template_families.py` and `bench/bench_templates.py`. For each original template
in the installed `trl/chat_templates/`, `family_tokenizer` copies the SmolLM2 tokenizer, sets the
template, and adds its marker strings (`<|im_end|>`, `<turn|>`, `<｜Assistant｜>`, ...) as special
tokens, as the real model's tokenizer has them.

`reference_labels` computes what the labels of a trajectory's selected turns must be without the
labeller's code paths: it renders with TRL's training template where TRL has one (as
`SFTTrainer(assistant_only_loss=True)` does) and takes TRL's own `assistant_masks`, restricted to each
selected turn's region (between the renderings of the prefixes before and after it) and minus the
generation prompt (what `add_generation_prompt=True` renders before the model writes); where TRL has
no training template, the region minus the generation prompt is the truth. Where a template is not
prefix-preserving at a turn (gpt-oss drops the analysis of turns before a final answer), the turn's
region is its `{% generation %}` blocks instead (the same number for each turn, Diffusion Gemma's two;
a last block after the last turn, Phi-3's closing eos, is no turn's). Whitespace after the last
character the model writes is not a label (the model never generates it). Every prefix is rendered
anew, so the result does not depend on the labeller's one-rendering shortcuts.
"""

from __future__ import annotations

import copy
import random
import re
from pathlib import Path
from typing import Any

import trl
from trl.chat_template_utils import get_training_chat_template, has_generation_markers

TEMPLATE_DIR = Path(trl.__file__).parent / "chat_templates"
ORIGINALS = sorted(p.stem for p in TEMPLATE_DIR.glob("*.jinja") if not p.stem.endswith("_training"))
_MARKER = re.compile(
    r"<\|[^<>\s'\"]{1,40}?\|?>|<[^<>\s'\"|]{1,40}\|>|<｜[^<>'\"]{1,40}?｜>|\[/?INST\]|"
    r"<(?:start|end)_of_turn>|<end_of_utterance>|\[gMASK\]|<sop>|<bos>|<eos>"
)
IGNORE = -100


def family_tokenizer(base: Any, name: str) -> Any:
    """The tokenizer `base` with TRL's original template `name` and its marker strings as special tokens."""
    tokenizer = copy.deepcopy(base)
    template = (TEMPLATE_DIR / f"{name}.jinja").read_text(encoding="utf-8")
    training = TEMPLATE_DIR / f"{name}_training.jinja"
    texts = template + (training.read_text(encoding="utf-8") if training.exists() else "")
    markers = sorted({m for m in _MARKER.findall(texts) if m not in tokenizer.get_vocab()})
    tokenizer.add_special_tokens({"additional_special_tokens": markers}, replace_extra_special_tokens=False)
    tokenizer.chat_template = template
    return tokenizer


def reference_template(tokenizer: Any) -> tuple[str, bool]:
    """The template TRL's `assistant_only_loss` would render with, and whether it has generation masks."""
    own = tokenizer.chat_template
    if has_generation_markers(own):
        return own, True
    try:
        training = get_training_chat_template(tokenizer)
    except ValueError:  # TRL has no training version of this template
        return own, False
    return (training or own), True


def _common_prefix(a: str, b: str) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def _generation_blocks(tokenizer: Any, messages: list[dict], tools: Any, template: str) -> list[tuple[int, int]]:
    """The character spans of the template's `{% generation %}` blocks (what TRL's mask is made of)."""
    from transformers.utils.chat_template_utils import render_jinja_template

    _, spans = render_jinja_template(
        [messages],
        tools=tools,
        chat_template=template,
        return_assistant_tokens_mask=True,
        **tokenizer.special_tokens_map,
    )
    return [tuple(span) for span in spans[0]]


def reference_labels(
    tokenizer: Any, messages: list[dict], steps: list[int], tools: Any = None
) -> tuple[list[int], list[int]]:
    """`(input_ids, labels)` of `messages` (prepared for the template), `steps` labelled, cut after the last label."""
    template, masked = reference_template(tokenizer)

    def render(upto: int, generation_prompt: bool) -> str:
        return tokenizer.apply_chat_template(
            messages[:upto],
            tools=tools,
            tokenize=False,
            chat_template=template,
            add_generation_prompt=generation_prompt,
        )

    encoded = tokenizer.apply_chat_template(
        messages,
        tools=tools,
        tokenize=True,
        return_dict=True,
        chat_template=template,
        return_assistant_tokens_mask=masked,
    )
    full = tokenizer.apply_chat_template(messages, tools=tools, tokenize=False, chat_template=template)
    ids = list(encoded["input_ids"])
    mask = list(encoded["assistant_masks"]) if masked else [1] * len(ids)
    offsets = tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    assert len(offsets) == len(ids)
    turns = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
    labels = [IGNORE] * len(ids)
    previous = 0
    for step in steps:
        p = turns[step]
        if p == 0:
            prompt = tokenizer.apply_chat_template(
                [{"role": "user", "content": "x"}], tokenize=False, add_generation_prompt=True, chat_template=template
            )
            bare = tokenizer.apply_chat_template(
                [{"role": "user", "content": "x"}], tokenize=False, chat_template=template
            )
            start = len(prompt) - len(bare) if full.startswith(prompt[len(bare) :]) else 0
        else:
            start = _common_prefix(render(p, True), full)
        end = _common_prefix(render(p + 1, False), full)
        if (
            end <= start or start < previous or (p and not full.startswith(render(p, False)))
        ):  # not prefix-preserving here: the turn's own mask run (see below)
            blocks = _generation_blocks(tokenizer, messages, tools, template)
            if len(blocks) == len(turns) + 1:  # a block of its own closes the conversation (Phi-3's eos): no turn's
                blocks = blocks[:-1]
            per_turn, uneven = divmod(len(blocks), len(turns))
            assert not uneven, f"{len(blocks)} generation blocks for {len(turns)} assistant turns"
            start, end = blocks[step * per_turn][0], blocks[(step + 1) * per_turn - 1][1]
            with_prompt, bare = render(p, True), render(p, False)
            prompt = with_prompt[len(bare) :] if with_prompt.startswith(bare) else ""
            if prompt and full.startswith(prompt, start):  # the generation prompt is not the model's
                start += len(prompt)
        previous = end
        while end > start and full[end - 1].isspace():
            end -= 1
        mine = [k for k, (s, _) in enumerate(offsets) if start <= s < end and mask[k]]
        while mine and not tokenizer.decode(ids[mine[-1]]).strip():  # whitespace after the model's last character
            mine.pop()
        for k in mine:
            labels[k] = ids[k]
    last = max((k for k, label in enumerate(labels) if label != IGNORE), default=-1) + 1
    return ids[:last], labels[:last]


def labelled_segments(tokenizer: Any, input_ids: list[int], labels: list[int]) -> list[str]:
    """Each run of consecutive labelled tokens, decoded (a label is its token or IGNORE)."""
    segments, run = [], []
    for token, label in zip(input_ids, labels):
        if label != IGNORE:
            assert label == token
            run.append(token)
        elif run:
            segments.append(tokenizer.decode(run))
            run = []
    return segments + ([tokenizer.decode(run)] if run else [])


def sample_steps(messages: list[dict], rng: random.Random, ratio: float = 0.3) -> list[int]:
    """A random `ratio` of a trajectory's steps (at least one), sorted."""
    n = sum(m["role"] == "assistant" for m in messages)
    return sorted(rng.sample(range(n), max(1, round(ratio * n))))


SYNTHETIC = [
    {
        "name": "system_and_parallel_calls",
        "messages": [
            {"role": "system", "content": "You are a travel agent. Use the tools."},
            {"role": "user", "content": "Find flights to Paris and the weather there."},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "c1",
                        "type": "function",
                        "function": {"name": "search_flights", "arguments": '{"to": "CDG", "n": 2}'},
                    },
                    {"id": "c2", "type": "function", "function": {"name": "weather", "arguments": {"city": "Paris"}}},
                ],
            },
            {"role": "tool", "tool_call_id": "c1", "name": "search_flights", "content": "AF12 09:00, AF14 13:00"},
            {"role": "tool", "tool_call_id": "c2", "name": "weather", "content": "sunny, 21C"},
            {"role": "assistant", "content": "Two flights: AF12 at 09:00 and AF14 at 13:00; it is sunny."},
            {"role": "user", "content": "Book AF14."},
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [
                    {"id": "c3", "type": "function", "function": {"name": "book", "arguments": '{"flight": "AF14"}'}}
                ],
            },
            {"role": "tool", "tool_call_id": "c3", "name": "book", "content": "confirmed"},
            {"role": "assistant", "content": "AF14 is booked."},
        ],
    },
    {
        "name": "reasoning_and_empty_content",
        "messages": [
            {"role": "user", "content": "Is 91 prime?"},
            {
                "role": "assistant",
                "content": "",
                "reasoning_content": "91 = 7 * 13.",
                "tool_calls": [{"type": "function", "function": {"name": "factor", "arguments": '{"n": 91}'}}],
            },
            {"role": "tool", "name": "factor", "content": "[7, 13]"},
            {"role": "assistant", "content": "No: 91 = 7 x 13.", "reasoning_content": "The tool agrees."},
        ],
    },
    {
        "name": "react_text",
        "messages": [
            {"role": "user", "content": "Question: which river runs through Lyon?"},
            {"role": "assistant", "content": "Thought: search it.\nAction: search[Lyon river]"},
            {"role": "user", "content": "Observation: the Rhone and the Saone meet in Lyon."},
            {"role": "assistant", "content": "Thought: two rivers.\nAction: finish[Rhone and Saone]"},
        ],
    },
]
"""Rows that run without ../shared: a system prompt with parallel calls, empty and null content beside
calls, reasoning, and ReAct text."""
