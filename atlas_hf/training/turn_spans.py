"""Where each assistant turn's generated text lies in a trajectory's rendering.

The labels of a step are every character the model writes in that turn: what follows the
generation prompt (so a gpt-oss channel header, a Qwen3 think block, the tool-call syntax) up to and
including the token that ends generation (`<|im_end|>`, `<|end|>`, `<|call|>`, GLM-4's next role
token), never the generation prompt and never whitespace the template writes after that token.

- Templates with `{% generation %}` blocks (TRL's training templates, and templates that ship
  them) are rendered once with their blocks tracked; block `k` is assistant turn `k`, and its start
  moves past whatever of the generation prompt it holds (DeepSeek's `<｜Assistant｜>`, a prefilled
  `<think>\\n`). That is TRL's `assistant_only_loss` mask, restricted to the selected turns.
- Other templates: one more rendering whose selected turns' content is fenced by markers finds
  the turns that start with their content; the rest are read prefix by prefix (a turn starts where
  the rendering of the turns before it plus the generation prompt stops matching the whole, and ends
  where the rendering up to it does).

Tracking the blocks uses `transformers.utils.chat_template_utils.render_jinja_template`, the function
`apply_chat_template(return_assistant_tokens_mask=True)` calls; `_render_tracked` is the one place
that does (`tests/test_template_families.py` fails clearly if an upgrade changes it).
"""

from __future__ import annotations

import re
from typing import Any, Sequence

from atlas_hf.training.chat_template import TemplateProfile, render_chat, template_profile
from atlas_hf.errors import InvalidInputError, TemplateError
from atlas_hf.trajectories.schema import assistant_indices

Span = tuple[int, int]
_FENCE = "@@atlas{}{}@@"
_FENCE_RE = re.compile(r"@@atlas([SE])(\d+)@@")
_end_of_turn: dict[str, tuple[str, str]] = {}


def _render_tracked(
    tokenizer: Any, messages: list[dict[str, Any]], tools: Any, template: str
) -> tuple[str, list[Span]]:
    """The rendering and the character span of each `{% generation %}` block in it."""
    from transformers.utils.chat_template_utils import render_jinja_template

    texts, spans = render_jinja_template(
        [messages],
        tools=tools,
        chat_template=template,
        return_assistant_tokens_mask=True,
        add_generation_prompt=False,
        **tokenizer.special_tokens_map,
    )
    return texts[0], [tuple(span) for span in spans[0]]


def _common_prefix(a: str, b: str) -> int:
    n = min(len(a), len(b))
    if a[:n] == b[:n]:
        return n
    lo, hi = 0, n  # a[:lo] == b[:lo], a[:hi] != b[:hi]
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if a[:mid] == b[:mid] else (lo, mid)
    return lo


def _trim(full: str, start: int, end: int) -> Span:
    while end > start and full[end - 1].isspace():
        end -= 1
    return start, end


def _turn_ends(tokenizer: Any, profile: TemplateProfile) -> tuple[str, str]:
    """What the template writes after an assistant turn's content where another turn follows (read token
    by token against the next case), and where the conversation ends there; stripped, cached per template."""
    if profile.template not in _end_of_turn:
        marker = "atlas_end_probe_5b1e"
        probe = [{"role": "user", "content": "probe"}, {"role": "assistant", "content": marker}]
        if profile.text_parts:
            probe = [{**m, "content": [{"type": "text", "text": m["content"]}]} for m in probe]
        ends = []
        for turns in (probe + probe[:1], probe):
            try:
                text = render_chat(tokenizer, turns, None, False, profile.template)
                ends.append(text[text.index(marker) + len(marker) :])
            except Exception:
                ends.append("")
        ids = [tokenizer(text, add_special_tokens=False)["input_ids"] for text in ends]
        same = next((k for k, (a, b) in enumerate(zip(*ids)) if a != b), min(map(len, ids)))
        followed = tokenizer.decode(ids[0][:same]).strip()
        if not followed:  # nothing in common (gpt-oss's `<|end|>` / `<|return|>`): the next special token
            first = next((i for i in ids[0] if tokenizer.decode([i]).strip()), None)
            followed = tokenizer.decode([first]) if first in tokenizer.all_special_ids else ""
        _end_of_turn[profile.template] = (followed, ends[1].strip())
    return _end_of_turn[profile.template]


def end_of_turn_text(tokenizer: Any, profile: TemplateProfile | None = None) -> str:
    """The text the template writes right after an assistant turn's content where another turn follows.

    Args:
        tokenizer (`PreTrainedTokenizerBase`): The model's tokenizer.
        profile (`TemplateProfile`, *optional*): Its profile (`template_profile`).

    Returns:
        `str`: E.g. `<|im_end|>` for ChatML templates, `<|end|>` for Phi-3 (not the eos it writes only to
        close a conversation); "" when the template writes nothing there or cannot render the probe.
    """
    return _turn_ends(tokenizer, profile or template_profile(tokenizer))[0]


def end_of_turn_texts(tokenizer: Any) -> list[str]:
    """The texts that may end an assistant turn: `end_of_turn_text`, and what ends the conversation's last
    turn when it differs (gpt-oss's `<|return|>` after `<|end|>`).

    Args:
        tokenizer (`PreTrainedTokenizerBase`): The model's tokenizer.

    Returns:
        `list[str]`: The distinct non-empty ones, in that order.
    """
    followed, last = _turn_ends(tokenizer, template_profile(tokenizer))
    return [text for text in dict.fromkeys((followed, last)) if text]


class _Renderer:
    """Renderings of one trajectory's prefixes, against its full rendering."""

    def __init__(
        self, tokenizer: Any, messages: Sequence[dict[str, Any]], tools: Any, profile: TemplateProfile, full: str
    ) -> None:
        self.tokenizer, self.messages, self.tools, self.profile, self.full = tokenizer, messages, tools, profile, full

    def prefix(self, upto: int, generation_prompt: bool) -> str:
        return render_chat(
            self.tokenizer, list(self.messages[:upto]), self.tools, generation_prompt, self.profile.template
        )

    def output_start(self, position: int, at_least: int) -> int:
        """Where the model starts writing turn `position`: where the prefix rendered with the generation
        prompt stops matching the whole (not before `at_least`)."""
        if position == 0:  # nothing before it to render: skip the generation prompt if it is there
            prompt = self.profile.generation_prompt
            return at_least + (len(prompt) if self.full.startswith(prompt, at_least) else 0)
        return max(at_least, _common_prefix(self.prefix(position, True), self.full))

    def prefix_span(self, position: int, after: int) -> Span:
        start = self.output_start(position, 0)
        end = _common_prefix(self.prefix(position + 1, False), self.full)
        if start < after or end <= start:
            return self.search_span(position, after)
        return _trim(self.full, start, end)

    def masked_region(self, position: int, blocks: list[Span]) -> Span:
        """The generation blocks inside turn `position`'s region (read prefix by prefix), first to last."""
        start = self.output_start(position, 0)
        end = _common_prefix(self.prefix(position + 1, False), self.full)
        if position == len(self.messages) - 1:
            end = self.conversation_end(start, end)
        inside = [(max(a, start), min(b, end)) for a, b in blocks if a < end and b > start]
        if not inside:
            raise TemplateError(
                f"the {self.profile.family} chat template marks no generated text in assistant turn "
                f"{position}; check that its `{{% generation %}}` blocks cover every assistant turn."
            )
        return _trim(self.full, inside[0][0], inside[-1][1])

    def conversation_end(self, start: int, end: int) -> int:
        """Where the last turn ends when the template closes the conversation with text of its own (Phi-3's
        trailing eos, masked by TRL): where a following user turn would start, if the turn's end-of-turn
        marker is there; else `end`."""
        probe = {"role": "user", "content": "atlas_probe"}
        if self.profile.text_parts:
            probe["content"] = [{"type": "text", "text": "atlas_probe"}]
        try:
            after = _common_prefix(
                render_chat(self.tokenizer, [*self.messages, probe], self.tools, False, self.profile.template),
                self.full,
            )
        except Exception:
            return end
        eot = end_of_turn_text(self.tokenizer, self.profile)
        close = self.full.rfind(eot, start, after) + len(eot) if eot else -1
        if close <= start or not start < after < end:
            return end
        rest = self.full[close:end]  # do they part within the first token after the marker (`<|im_end|>`, `<|user|>`)?
        offsets = self.tokenizer(rest, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
        first = next((b for a, b in offsets if rest[a:b].strip()), len(rest))
        return close if after - close <= first else end

    def search_span(self, position: int, after: int) -> Span:
        """Fallback for templates that rewrite earlier turns: the turn's content, then the end-of-turn marker."""
        message = self.messages[position]
        content = message.get("content")
        if isinstance(content, list):
            content = "".join(part.get("text", "") for part in content)
        content = (content or "").strip()
        start = self.full.find(content, after) if content else -1
        if start < 0:
            raise TemplateError(
                f"the {self.profile.family} chat template renders assistant turn {position} in a way atlas_hf "
                f"cannot locate (its text {content[:60]!r} is not in the rendering, and the renderings of the "
                "conversation's prefixes are not prefixes of it). Use a template whose renderings of a "
                "conversation's prefixes are prefixes of its rendering."
            )
        end = start + len(content)
        eot = end_of_turn_text(self.tokenizer, self.profile)
        if eot and self.full.startswith(eot, end):
            end += len(eot)
        return start, end


def _merged(blocks: list[Span]) -> list[Span]:
    """Generation blocks as disjoint sorted spans (nested or adjacent blocks joined)."""
    out: list[Span] = []
    for a, b in sorted(blocks):
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


def _masked_spans(renderer: _Renderer, blocks: list[Span], positions: list[int], ordinals: list[int]) -> list[Span]:
    """Spans from the generation blocks, each started where the model starts writing (the fast test:
    the text around the block's start splits the probed generation prompt; else the prefix rendering)."""
    full, prompt = renderer.full, renderer.profile.generation_prompt
    spans = []
    for position, k in zip(positions, ordinals):
        start, end = blocks[k]
        for j in range(len(prompt), -1, -1):
            if full.endswith(prompt[:j], 0, start) and full.startswith(prompt[j:], start):
                start += len(prompt) - j
                break
        else:
            start = min(renderer.output_start(position, start), end)
        spans.append(_trim(full, start, end))
    return spans


def _fenced_spans(renderer: _Renderer, positions: list[int]) -> list[Span] | None:
    """Spans found in one rendering whose selected turns' content is fenced by markers, or None when the
    template does not write the content verbatim right after the generation prompt, or has no end-of-turn
    marker to close a span with."""
    eot = end_of_turn_text(renderer.tokenizer, renderer.profile)
    if not eot or renderer.profile.text_parts:
        return None
    fenced = list(renderer.messages)
    for k, p in enumerate(positions):
        fenced[p] = {
            **fenced[p],
            "content": _FENCE.format("S", k) + (fenced[p].get("content") or "") + _FENCE.format("E", k),
        }
    try:
        text = render_chat(renderer.tokenizer, fenced, renderer.tools, False, renderer.profile.template)
    except Exception:
        return None
    plain, starts, ends, removed, last = [], {}, {}, 0, 0
    for match in _FENCE_RE.finditer(text):
        plain.append(text[last : match.start()])
        (starts if match.group(1) == "S" else ends)[int(match.group(2))] = match.start() - removed
        removed += match.end() - match.start()
        last = match.end()
    plain.append(text[last:])
    full = renderer.full
    if "".join(plain) != full or len(starts) != len(positions) or len(ends) != len(positions):
        return None
    prompt = renderer.profile.generation_prompt
    spans = []
    for k in range(len(positions)):
        close = full.find(eot, ends[k])
        bound = starts[k + 1] if k + 1 < len(positions) else len(full)
        if close < 0 or close >= bound or not full.endswith(prompt, 0, starts[k]):
            return None
        spans.append((starts[k], close + len(eot)))
    return spans


def assistant_turn_spans(
    tokenizer: Any,
    messages: Sequence[dict[str, Any]],
    steps: Sequence[int],
    tools: Any = None,
) -> tuple[str, list[Span]]:
    """The full rendering of `messages` and the character span of what the model writes in each of `steps`.

    Args:
        tokenizer (`PreTrainedTokenizerBase`): The model's tokenizer, with a chat template.
        messages (`list[dict]`): Turns prepared for the template (`prepare_messages`).
        steps (`list[int]`): The assistant turns (0-based step indices) to locate.
        tools (`list[dict]`, *optional*): The row's tool schemas (`parse_tools`).

    Returns:
        `tuple[str, list[tuple[int, int]]]`: The rendering (with `training_template`) and one
        `(start, end)` character span per step, in step order.

    Raises:
        `InvalidInputError`: A step is out of range.
        `TemplateError`: The template cannot render the turns, or renders a turn where it cannot be located.
    """
    profile = template_profile(tokenizer)
    turns = assistant_indices(messages)
    bad = [s for s in steps if not 0 <= s < len(turns)]
    if bad:
        raise InvalidInputError(
            f"steps {bad} are out of range for a trajectory of {len(turns)} assistant steps (0..{len(turns) - 1})."
        )
    ordinals = sorted(steps)
    positions = [turns[s] for s in ordinals]
    try:
        if profile.masked:
            full, blocks = _render_tracked(tokenizer, list(messages), tools, profile.template)
        else:
            full, blocks = render_chat(tokenizer, list(messages), tools, False, profile.template), []
        renderer = _Renderer(tokenizer, messages, tools, profile, full)
        if profile.masked and len(blocks) == len(turns) and all(a[1] <= b[0] for a, b in zip(blocks, blocks[1:])):
            return full, _masked_spans(renderer, blocks, positions, ordinals)
        if profile.masked:
            return full, [renderer.masked_region(p, _merged(blocks)) for p in positions]
        spans = _fenced_spans(renderer, positions)
        if spans is None:
            spans = []
            for p in positions:
                spans.append(renderer.prefix_span(p, spans[-1][1] if spans else 0))
        return full, spans
    except (TemplateError, InvalidInputError):
        raise
    except Exception as error:  # the template's own raise_exception, an undefined field, a type it cannot take
        raise TemplateError(
            f"the {profile.family} chat template cannot render this trajectory ({type(error).__name__}: "
            f"{str(error)[:200]}). Check the turns against what the model's template expects (roles, tool "
            "calls), or set `tokenizer.chat_template` to a template that takes them."
        ) from None


_REPLY_PROBE = "atlas_reply_probe_7c2d"


def next_turn_prompt(tokenizer: Any, messages: Sequence[dict[str, Any]]) -> tuple[str, str]:
    """What the model reads before writing its next turn, as training rendered it, and what it writes first.

    The prompt is the rendering of `messages` plus one probe assistant turn, cut where that turn's labels
    would start, so a rollout sees exactly the context the agent was trained in (a template's own
    generation prompt may differ: DeepSeek-V3's prefills `<think>`, which its training rendering does not).

    Args:
        tokenizer (`PreTrainedTokenizerBase`): The model's tokenizer, with a chat template.
        messages (`list[dict]`): The conversation so far, prepared (`prepare_messages`), ending on a turn
            that is not the assistant's.

    Returns:
        `tuple[str, str]`: The prompt, and the text a trained turn starts with before its content
        (gpt-oss's `<|channel|>final<|message|>`, Qwen3's empty think block; usually "").

    Raises:
        `TemplateError`: The template cannot render the conversation.
    """
    probe = {"role": "assistant", "content": _REPLY_PROBE}
    if template_profile(tokenizer).text_parts:
        probe["content"] = [{"type": "text", "text": _REPLY_PROBE}]
    turns = [*messages, probe]
    full, [(start, _)] = assistant_turn_spans(tokenizer, turns, [len(assistant_indices(turns)) - 1])
    content = full.find(_REPLY_PROBE, start)
    return full[:start], full[start:content] if content >= 0 else ""
