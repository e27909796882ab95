"""What atlas_hf needs to know of a model's chat template, probed once per template, and messages made ready for it.

`template_profile` reads a template once: which TRL family it is, the template the labels are read
from (TRL's training version with `{% generation %}` masks where TRL has one, as `SFTTrainer(
assistant_only_loss=True)` swaps in), the generation prompt, and what it can render (tool calls,
parallel calls, a system role, a tool role, string content). `prepare_messages` rewrites a
trajectory to fit: the same preparation serves the labeller, the rollout policy and the benchmarks,
so the agent is evaluated on the text it was trained on. Every rewrite that changes the text is
logged (once per template and kind) and counted in the returned `Preparation`.

TRL's templates are found in the installed `trl/chat_templates/` folder; `trl_template_dir` is the
one place that knows where (`tests/test_template_families.py` fails clearly if an upgrade moves it).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Sequence

from atlas_hf.errors import TemplateError
from atlas_hf.trajectories.schema import clean_message

logger = logging.getLogger(__name__)

_PROBE_NAME = "atlas_probe_tool_7f3a"
_PROBE_ARGUMENT = "atlas_probe_value_91c2"
_PROBE_TEXT = "atlas_probe_text_4d0b"
_profiles: dict[str, "TemplateProfile"] = {}
_warned: set[tuple[str, str]] = set()

FOLDED_SYSTEM = "folded_system"
TOOL_AS_USER = "tool_as_user"
CALLS_AS_TEXT = "calls_as_text"
MERGED_TURNS = "merged_turns"
REWRITES: tuple[str, ...] = (FOLDED_SYSTEM, TOOL_AS_USER, CALLS_AS_TEXT, MERGED_TURNS)
"""The kinds of rewrite `prepare_messages` may make, as counted in `Preparation.rewrites`."""

_REWRITE_NOTES = {
    FOLDED_SYSTEM: "has no system role; the system prompt is written at the start of the first user turn",
    TOOL_AS_USER: "has no tool role; tool results are written as user turns (`Tool result (name): ...`)",
    CALLS_AS_TEXT: "does not render `tool_calls`; they are written into the assistant turn's text as "
    "<tool_call>{json}</tool_call> so they are not lost",
    MERGED_TURNS: "requires user and assistant turns to alternate; consecutive user turns are joined",
}


def trl_template_dir() -> Path:
    """The folder of chat templates the installed TRL ships (`trl/chat_templates/`)."""
    import trl

    return Path(trl.__file__).parent / "chat_templates"


@lru_cache(maxsize=1)
def _trl_families() -> dict[str, str]:
    """Template text -> TRL family name, for the originals and their `_training` versions."""
    folder = trl_template_dir()
    return {path.read_text(encoding="utf-8"): path.stem for path in sorted(folder.glob("*.jinja"))}


def chat_template_of(tokenizer: Any) -> str:
    """The tokenizer's chat template (the `default` one of a template shipped as named variants).

    Args:
        tokenizer (`PreTrainedTokenizerBase`): The model's tokenizer.

    Returns:
        `str`: Its `chat_template` (the key of every per-template cache here).

    Raises:
        `TemplateError`: The tokenizer has no chat template.
    """
    template = getattr(tokenizer, "chat_template", None)
    if isinstance(template, dict):
        template = template.get("default")
    if not template:
        raise TemplateError(
            f"The tokenizer {getattr(tokenizer, 'name_or_path', '')!r} has no chat template; set "
            "`tokenizer.chat_template` to the template the model was trained with."
        )
    return template


def has_generation_masks(template: str) -> bool:
    """Whether a chat template marks what the model writes with `{% generation %}` blocks."""
    from trl.chat_template_utils import has_generation_markers

    return has_generation_markers(template)


@dataclass(frozen=True)
class TemplateProfile:
    """What one chat template renders, probed once (see `template_profile`).

    Attributes:
        family (`str`): The TRL template it is (e.g. `"qwen3"`, `"gptoss"`), or `"custom"`.
        template (`str`): The template atlas_hf renders with: TRL's training version where TRL has one,
            else the tokenizer's own.
        masked (`bool`): `template` marks the model's output with `{% generation %}` blocks.
        generation_prompt (`str`): What `add_generation_prompt=True` appends after a user turn.
        tool_calls (`bool`): It writes an assistant turn's `tool_calls`.
        parallel_calls (`bool`): It accepts several calls in one turn.
        arguments_as_json (`bool`): It needs `arguments` as JSON strings (mappings make it fail).
        system_role (`bool`): It accepts a system turn.
        tool_role (`bool`): It writes a tool turn's content.
        alternating (`bool`): It requires user and assistant turns to alternate.
        text_parts (`bool`): It needs content as a list of `{"type": "text"}` parts (vision-language models).
    """

    family: str
    template: str
    masked: bool
    generation_prompt: str
    tool_calls: bool = True
    parallel_calls: bool = True
    arguments_as_json: bool = False
    system_role: bool = True
    tool_role: bool = True
    alternating: bool = False
    text_parts: bool = False


@dataclass
class Preparation:
    """Messages made ready for a template, and what was rewritten to fit it.

    Attributes:
        messages (`list[dict]`): The turns to render; their assistant turns are the trajectory's, in order.
        rewrites (`dict[str, int]`): Turns changed per kind of rewrite (`REWRITES`); empty when none.
    """

    messages: list[dict[str, Any]]
    rewrites: dict[str, int] = field(default_factory=dict)

    @property
    def num_rewritten(self) -> int:
        """Turns whose text was changed to fit the template."""
        return sum(self.rewrites.values())


def render_chat(
    tokenizer: Any,
    messages: list[dict[str, Any]],
    tools: Any,
    add_generation_prompt: bool,
    template: str | None = None,
) -> str:
    """`messages` rendered as text by a chat template, untokenized.

    Args:
        tokenizer (`PreTrainedTokenizerBase`): The model's tokenizer.
        messages (`list[dict]`): Turns ready for the template (`prepare_messages`).
        tools (`list[dict]`, *optional*): JSON schemas of the tools.
        add_generation_prompt (`bool`): End with the assistant header.
        template (`str`, *optional*): The template; defaults to the tokenizer's.

    Returns:
        `str`: The rendering.
    """
    return tokenizer.apply_chat_template(
        messages, tools=tools, tokenize=False, add_generation_prompt=add_generation_prompt, chat_template=template
    )


def _renders(tokenizer: Any, template: str, messages: list[dict[str, Any]], *needles: str) -> bool:
    try:
        text = render_chat(tokenizer, messages, None, False, template)
    except Exception:  # a template's own raise_exception, or an undefined field: it cannot render this
        return False
    return all(needle in text for needle in needles)


def _call(k: int, arguments: Any) -> dict[str, Any]:
    return {"id": f"call_{k}", "type": "function", "function": {"name": f"{_PROBE_NAME}{k}", "arguments": arguments}}


def _probe(tokenizer: Any, own: str) -> TemplateProfile:
    families = _trl_families()
    family = families.get(own, "custom")
    template, masked = own, has_generation_masks(own)
    if not masked and family != "custom" and f"{family}_training" in families.values():
        template = next(text for text, name in families.items() if name == f"{family}_training")
        masked = has_generation_masks(template)
    user = {"role": "user", "content": _PROBE_TEXT}
    text_parts = not _renders(tokenizer, template, [user], _PROBE_TEXT) and _renders(
        tokenizer, template, [{"role": "user", "content": [{"type": "text", "text": _PROBE_TEXT}]}], _PROBE_TEXT
    )

    def chat(*turns: dict[str, Any]) -> list[dict[str, Any]]:
        return [_as_parts(turn) if text_parts else turn for turn in turns]

    def assistant(*calls: dict[str, Any]) -> dict[str, Any]:
        return {"role": "assistant", "content": "", "tool_calls": list(calls)}

    mapping = {"x": _PROBE_ARGUMENT}
    tool_calls = _renders(
        tokenizer, template, chat(user, assistant(_call(0, mapping))), f"{_PROBE_NAME}0", _PROBE_ARGUMENT
    )
    as_json = not tool_calls and _renders(
        tokenizer, template, chat(user, assistant(_call(0, json.dumps(mapping)))), f"{_PROBE_NAME}0", _PROBE_ARGUMENT
    )
    arguments = json.dumps(mapping) if as_json else mapping
    parallel = _renders(
        tokenizer,
        template,
        chat(user, assistant(_call(0, arguments), _call(1, arguments))),
        f"{_PROBE_NAME}0",
        f"{_PROBE_NAME}1",
    )
    reply = {"role": "assistant", "content": "atlas_reply"}
    tool = {"role": "tool", "tool_call_id": "call_0", "name": f"{_PROBE_NAME}0", "content": "atlas_tool_result"}
    tool_role = _renders(
        tokenizer,
        template,
        chat(user, assistant(_call(0, arguments)) if tool_calls or as_json else reply, tool, reply),
        "atlas_tool_result",
    )
    system_role = _renders(
        tokenizer, template, chat({"role": "system", "content": "atlas_system"}, user), "atlas_system"
    )
    alternating = not _renders(tokenizer, template, chat(user, user, reply), "atlas_reply")
    try:
        prompt = render_chat(tokenizer, chat(user), None, True, template)
        bare = render_chat(tokenizer, chat(user), None, False, template)
    except Exception as error:
        raise TemplateError(
            f"The {family} chat template cannot render a single user turn "
            f"({type(error).__name__}: {error}); it cannot be used to train a chat model."
        ) from None
    generation_prompt = prompt[len(bare) :] if prompt.startswith(bare) else ""
    return TemplateProfile(
        family,
        template,
        masked,
        generation_prompt,
        tool_calls or as_json,
        parallel,
        as_json,
        system_role,
        tool_role,
        alternating,
        text_parts,
    )


def template_profile(tokenizer: Any) -> TemplateProfile:
    """What the tokenizer's chat template renders and which template the labels are read from (cached).

    Args:
        tokenizer (`PreTrainedTokenizerBase`): The model's tokenizer.

    Returns:
        `TemplateProfile`: The probed profile.

    Raises:
        `TemplateError`: The tokenizer has no chat template, or it cannot render one user turn.
    """
    own = chat_template_of(tokenizer)
    if own not in _profiles:
        _profiles[own] = _probe(tokenizer, own)
    return _profiles[own]


def training_template(tokenizer: Any) -> str:
    """The template atlas_hf trains and rolls out with: TRL's training version of the tokenizer's where
    TRL has one (the same swap as `SFTTrainer(assistant_only_loss=True)`), else the tokenizer's own.

    Args:
        tokenizer (`PreTrainedTokenizerBase`): The model's tokenizer.

    Returns:
        `str`: The template text.
    """
    return template_profile(tokenizer).template


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


def _as_parts(message: dict[str, Any]) -> dict[str, Any]:
    content = message.get("content")
    return (
        {**message, "content": [{"type": "text", "text": content or ""}]} if not isinstance(content, list) else message
    )


def _note(profile: TemplateProfile, tokenizer: Any, kind: str) -> None:
    if (profile.template, kind) not in _warned:
        _warned.add((profile.template, kind))
        logger.warning(
            "The %s chat template of %r %s (counted per row in `num_rewritten_turns`; "
            "fit_template=False raises instead).",
            profile.family,
            getattr(tokenizer, "name_or_path", ""),
            _REWRITE_NOTES[kind],
        )


def _refuse(profile: TemplateProfile, row: Any, turn: int, problem: str, fix: str) -> TemplateError:
    where = f"Row {row}, turn {turn}" if row is not None else f"Turn {turn}"
    return TemplateError(f"{where}: the {profile.family} chat template {problem}. {fix}")


def prepare_messages(
    tokenizer: Any, messages: Sequence[dict[str, Any]], fit_template: bool = True, row: Any = None
) -> Preparation:
    """Canonical messages made ready for the tokenizer's chat template (`template_profile`).

    Null optional keys are dropped (Arrow adds them), None content beside tool calls becomes "",
    tool-call `arguments` are mappings (JSON strings where the template needs them), and content is
    given as text parts where the template needs lists. Where the template cannot take the turns as
    they are, `fit_template=True` (the default, what a user of that model does by hand) rewrites them:
    calls written as text where the template drops `tool_calls`, the system prompt folded into the
    first user turn where there is no system role, tool results written as user turns where there is
    no tool role, and consecutive user turns joined where roles must alternate. Each kind is logged
    once per template and counted in `Preparation.rewrites`.

    Args:
        tokenizer (`PreTrainedTokenizerBase`): The model's tokenizer.
        messages (`list[dict]`): Canonical messages (`atlas_hf.trajectories.schema.check_messages`).
        fit_template (`bool`, defaults to `True`): Rewrite turns the template has no place for; False
            raises instead of changing the text.
        row (`int` or `str`, *optional*): The row, for error messages.

    Returns:
        `Preparation`: The turns and the count of rewrites.

    Raises:
        `TemplateError`: The template has no chat template, a turn makes several tool calls and the
            template takes one at a time, or a turn needs a rewrite and `fit_template` is False.
    """
    profile = template_profile(tokenizer)
    rewrites: dict[str, int] = {}

    def rewrite(kind: str, turn: int, problem: str) -> None:
        if not fit_template:
            raise _refuse(
                profile,
                row,
                turn,
                problem,
                "Pass fit_template=True to rewrite such turns, or drop them with dataset.map first.",
            )
        rewrites[kind] = rewrites.get(kind, 0) + 1
        _note(profile, tokenizer, kind)

    prepared: list[dict[str, Any]] = []
    for t, original in enumerate(messages):
        message = clean_message(original)
        role, calls = message.get("role"), message.get("tool_calls")
        if calls and not profile.tool_calls:
            rewrite(CALLS_AS_TEXT, t, "does not render tool calls")
            text = message.get("content") or ""
            message["content"] = (text + "\n" if text else "") + tool_calls_as_text(calls)
            del message["tool_calls"]
        elif calls:
            if len(calls) > 1 and not profile.parallel_calls:
                raise _refuse(
                    profile,
                    row,
                    t,
                    f"takes one tool call per turn and this turn makes {len(calls)}",
                    "Split the turn into one assistant turn per call (each followed by its tool "
                    "result), or train with a template that takes parallel calls.",
                )
            if profile.arguments_as_json:
                message["tool_calls"] = [
                    {
                        **c,
                        "function": {
                            **c["function"],
                            "arguments": json.dumps(c["function"]["arguments"], ensure_ascii=False),
                        },
                    }
                    for c in calls
                ]
        if message.get("content") is None:
            message["content"] = ""
        if role == "tool" and not profile.tool_role:
            rewrite(TOOL_AS_USER, t, "has no tool role")
            name = message.pop("name", None)
            message.pop("tool_call_id", None)
            message = {"role": "user", "content": f"Tool result{f' ({name})' if name else ''}: {message['content']}"}
        if role == "system" and not profile.system_role:
            rewrite(FOLDED_SYSTEM, t, "has no system role")
            message = {"role": "user", "content": message["content"], "folded": True}
        prepared.append(message)
    prepared = _join_users(prepared, profile, rewrite)
    if profile.text_parts:
        prepared = [_as_parts(m) for m in prepared]
    return Preparation(prepared, rewrites)


def _join_users(messages: list[dict[str, Any]], profile: TemplateProfile, rewrite: Any) -> list[dict[str, Any]]:
    """Folded system prompts joined to the next user turn and, where roles must alternate, runs of user turns."""
    out: list[dict[str, Any]] = []
    for t, message in enumerate(messages):
        previous = out[-1] if out else None
        folded = previous is not None and previous.pop("folded", False)
        if previous is not None and message["role"] == previous["role"] == "user" and (folded or profile.alternating):
            if not folded:
                rewrite(MERGED_TURNS, t, "requires user and assistant turns to alternate")
            out[-1] = {**previous, "content": previous["content"] + "\n\n" + message["content"]}
            out[-1].pop("folded", None)
            continue
        out.append(message)
    if out and out[-1].pop("folded", False):
        out[-1] = {k: v for k, v in out[-1].items() if k != "folded"}
    return out
