"""What atlas_hf needs to know of a model's chat template, probed once per template.

Whether it writes an assistant turn's `tool_calls` (templates that drop them get the calls
written into the turn's text, so they are not lost), the text it puts after an assistant turn,
and messages made ready for it (`prepare_messages`). Every stage that renders a chat (the
labeller, the rollout policy, the benchmarks) goes through `prepare_messages`.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Sequence

from atlas_hf.errors import TemplateError
from atlas_hf.schema import clean_message

logger = logging.getLogger(__name__)

_PROBE_NAME = "atlas_probe_tool_7f3a"
_PROBE_ARGUMENT = "atlas_probe_value_91c2"
_tool_call_support: dict[str, bool] = {}
_warned_tool_calls: set[str] = set()
_end_of_turn_by_template: dict[str, str] = {}


def chat_template_of(tokenizer: Any) -> str:
    """The tokenizer's chat template.

    Args:
        tokenizer (`PreTrainedTokenizerBase`): The model's tokenizer.

    Returns:
        `str`: Its `chat_template` (the key of every per-template cache here).

    Raises:
        `TemplateError`: The tokenizer has no chat template.
    """
    template = getattr(tokenizer, "chat_template", None)
    if not template:
        raise TemplateError(
            f"The tokenizer {getattr(tokenizer, 'name_or_path', '')!r} has no chat template; set "
            "`tokenizer.chat_template` to the template the model was trained with."
        )
    return template


def render_chat(tokenizer: Any, messages: list[dict[str, Any]], tools: Any, add_generation_prompt: bool) -> str:
    """`messages` rendered as text by the tokenizer's chat template, untokenized.

    Args:
        tokenizer (`PreTrainedTokenizerBase`): The model's tokenizer.
        messages (`list[dict]`): Turns ready for the template (`prepare_messages`).
        tools (`list[dict]`, *optional*): JSON schemas of the tools.
        add_generation_prompt (`bool`): End with the assistant header.

    Returns:
        `str`: The rendering.
    """
    return tokenizer.apply_chat_template(
        messages, tools=tools, tokenize=False, add_generation_prompt=add_generation_prompt
    )


def template_renders_tool_calls(tokenizer: Any) -> bool:
    """Whether the tokenizer's chat template writes an assistant turn's `tool_calls` into the text.

    Args:
        tokenizer (`PreTrainedTokenizerBase`): The model's tokenizer.

    Returns:
        `bool`: True when a probe call's name and argument show in the rendering (probed once per
        template; a template that fails on the probe counts as not rendering calls).

    Raises:
        `TemplateError`: The tokenizer has no chat template.
    """
    template = chat_template_of(tokenizer)
    if template not in _tool_call_support:
        probe = [
            {"role": "user", "content": "probe"},
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [
                    {
                        "id": "call_0",
                        "type": "function",
                        "function": {"name": _PROBE_NAME, "arguments": {"x": _PROBE_ARGUMENT}},
                    }
                ],
            },
        ]
        try:
            text = render_chat(tokenizer, probe, None, False)
            _tool_call_support[template] = _PROBE_NAME in text and _PROBE_ARGUMENT in text
        except Exception:
            _tool_call_support[template] = False
    return _tool_call_support[template]


def tool_calls_as_text(tool_calls: Sequence[dict[str, Any]]) -> str:
    """Tool calls written as text, for templates that would otherwise drop them.

    Args:
        tool_calls (`list[dict]`): OpenAI tool calls (or flat `{"name", "arguments"}` ones).

    Returns:
        `str`: One `<tool_call>` block per call, holding `{"name": ..., "arguments": ...}` as JSON
        (arguments given as a JSON string are parsed into an object), the blocks joined by newlines.
    """
    parts = []
    for call in tool_calls:
        function = call.get("function", call)
        arguments = function.get("arguments")
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments)
            except json.JSONDecodeError:
                pass
        parts.append(
            "<tool_call>\n" + json.dumps({"name": function.get("name"), "arguments": arguments}) + "\n</tool_call>"
        )
    return "\n".join(parts)


def parse_tools(tools: Any) -> list[dict[str, Any]] | None:
    """A row's `tools` for the chat template.

    Args:
        tools (`list[dict]`, `str` or `None`): JSON schemas of the tools, or that list as a JSON string.

    Returns:
        `list[dict] | None`: The schemas; None when there are none, however the emptiness is written.

    Raises:
        `json.JSONDecodeError`: A string that is not JSON.
    """
    if isinstance(tools, str):
        tools = json.loads(tools) if tools.strip() else None
    return list(tools) if tools else None


def prepare_messages(tokenizer: Any, messages: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Messages ready for the template.

    Args:
        tokenizer (`PreTrainedTokenizerBase`): The model's tokenizer.
        messages (`list[dict]`): Canonical messages (`atlas_hf.schema`).

    Returns:
        `list[dict]`: New turns with null optional keys dropped (Arrow adds them to every turn), None
        content as "", and, for templates that drop tool calls, the calls written into the turn's text
        with `tool_calls_as_text` (and a warning, once per template).

    Raises:
        `TemplateError`: The tokenizer has no chat template.
    """
    keep_calls = template_renders_tool_calls(tokenizer)
    prepared = []
    for message in messages:
        message = clean_message(message)
        calls = message.get("tool_calls")
        if calls and not keep_calls:
            template = chat_template_of(tokenizer)
            if template not in _warned_tool_calls:
                _warned_tool_calls.add(template)
                logger.warning(
                    "The chat template of %r does not render `tool_calls`; atlas_hf writes them into the "
                    "assistant turn's text as <tool_call>{json}</tool_call> so they are not lost.",
                    getattr(tokenizer, "name_or_path", ""),
                )
            text = message.get("content") or ""
            message["content"] = (text + "\n" if text else "") + tool_calls_as_text(calls)
            del message["tool_calls"]
        if message.get("content") is None:
            message["content"] = ""
        prepared.append(message)
    return prepared


def end_of_turn_text(tokenizer: Any) -> str:
    """The text the template writes right after an assistant turn's content, stripped (cached per template).

    Args:
        tokenizer (`PreTrainedTokenizerBase`): The model's tokenizer.

    Returns:
        `str`: E.g. `<|im_end|>` for ChatML templates; "" when the template writes nothing there.

    Raises:
        `TemplateError`: The tokenizer has no chat template.
    """
    template = chat_template_of(tokenizer)
    if template not in _end_of_turn_by_template:
        marker = "atlas_end_probe_5b1e"
        probe = [{"role": "user", "content": "probe"}, {"role": "assistant", "content": marker}]
        text = render_chat(tokenizer, probe, None, False)
        _end_of_turn_by_template[template] = text[text.index(marker) + len(marker) :].strip()
    return _end_of_turn_by_template[template]
