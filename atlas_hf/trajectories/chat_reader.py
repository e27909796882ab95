"""One published chat, read into canonical `messages` (`atlas_hf.trajectories.schema`): roles, content, tool calls.

`ChatReader` knows the turn layouts people publish (OpenAI `role`/`content`, ShareGPT
`from`/`value`, ShareGPT's `function_call` and `observation` turns, per-turn loss flags) and
reads one row at a time; `atlas_hf.trajectories.normalize.normalize_trajectories` maps it over a dataset.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Mapping

from atlas_hf.errors import TrajectoryError
from atlas_hf.trajectories.schema import canonical_tool_calls, clean_message, text_of_parts

DEFAULT_ROLE_MAP: dict[str, str] = {
    "system": "system",
    "user": "user",
    "human": "user",
    "assistant": "assistant",
    "gpt": "assistant",
    "chatgpt": "assistant",
    "bot": "assistant",
    "model": "assistant",
    "function_call": "assistant",
    "tool": "tool",
    "observation": "tool",
    "function": "tool",
    "ipython": "tool",
}
"""Role names of OpenAI, ShareGPT, AgentGym, AgentInstruct, LLaMA-Factory and Llama 3, mapped to
the canonical roles. A `function_call` turn whose text is a JSON call `{"name", "arguments"}` (or a
list of them) becomes an assistant turn with `tool_calls`; the `observation` turns that follow it
get that call's `tool_call_id` and `name`."""


def parse_function_call(text: str, first_id: int) -> list[dict[str, Any]] | None:
    """OpenAI `tool_calls` from a ShareGPT `function_call` turn's JSON text.

    Args:
        text (`str`): The turn's text: `{"name", "arguments"}` or a list of them, as JSON.
        first_id (`int`): The number of the first call's id (`call_<n>`), so ids stay unique in a chat.

    Returns:
        `list[dict] | None`: The calls, as written (`canonical_tool_calls` parses JSON-string arguments); None
        if the text is not a call.
    """
    try:
        parsed = json.loads(text)
    except (TypeError, ValueError):
        return None
    calls = parsed if isinstance(parsed, list) else [parsed]
    if not calls or not all(isinstance(c, dict) and isinstance(c.get("name"), str) for c in calls):
        return None
    tool_calls = []
    for k, call in enumerate(calls):
        arguments = call.get("arguments", {})
        tool_calls.append(
            {
                "id": f"call_{first_id + k}",
                "type": "function",
                "function": {"name": call["name"], "arguments": arguments},
            }
        )
    return tool_calls


@dataclass(frozen=True)
class ChatReader:
    """Turns one source chat list into canonical messages (and the critical steps its flags mark).

    Args:
        messages_field (`str`): The column that holds the chat (for error messages).
        role_field (`str`), content_field (`str`): The turn keys of the role and the text.
        role_map (`tuple[tuple[str, str], ...]`): Source role name -> canonical role.
        loss_field (`str`, *optional*): A per-turn flag marking the assistant turns to train on; the
            flagged steps become the row's `critical_steps`.
    """

    messages_field: str
    role_field: str
    content_field: str
    role_map: tuple[tuple[str, str], ...]
    loss_field: str | None

    def _role(self, raw: Any, roles: Mapping[str, str], row: int, where: str) -> str:
        if isinstance(raw, str):
            role = roles.get(raw, roles.get(raw.strip().lower()))
            if role is not None:
                return role
        raise TrajectoryError(
            row,
            f"{where}.{self.role_field}",
            f"unknown role {raw!r}; expected one of {sorted(roles)}.",
            f"Map it with role_map={{{raw!r}: 'assistant'}} (or 'user', 'system', 'tool').",
        )

    def _loss(self, raw: Any, row: int, where: str) -> bool:
        if raw is None or isinstance(raw, bool) or (isinstance(raw, int) and raw in (0, 1)):
            return bool(raw)
        raise TrajectoryError(
            row,
            f"{where}.{self.loss_field}",
            f"training flag {raw!r} ({type(raw).__name__}); expected true, false or null.",
            "Pass loss_field=... naming the per-turn boolean flag, or fix the value.",
        )

    def _check_content(self, message: dict[str, Any], row: int, where: str) -> None:
        role, content = message["role"], message["content"]
        calls = message.get("tool_calls")
        if "tool_calls" in message and (
            role != "assistant" or not isinstance(calls, list) or not all(isinstance(call, Mapping) for call in calls)
        ):
            raise TrajectoryError(
                row,
                f"{where}.tool_calls",
                f"expected a list of tool calls (dicts) on an assistant turn; got {calls!r:.60} on a {role} turn.",
            )
        if calls:
            message["tool_calls"] = canonical_tool_calls(calls, row, f"{where}.tool_calls")
        if content is None and not (role == "assistant" and message.get("tool_calls")):
            raise TrajectoryError(
                row,
                f"{where}.{self.content_field}",
                f"content is missing or null on a {role} turn; only an assistant turn with tool_calls "
                "may have null content.",
                "Pass content_field=... naming the key that holds the text.",
            )
        if isinstance(content, (list, tuple)):  # OpenAI content parts: their text
            content = message["content"] = text_of_parts(content, row, f"{where}.{self.content_field}")
        if content is not None and not isinstance(content, str):
            raise TrajectoryError(
                row,
                f"{where}.{self.content_field}",
                f"content of type {type(content).__name__}; expected a string.",
                "Convert it to text first (dataset.map), or pass content_field=... naming the text key.",
            )

    def read(self, chat: Any, row: int) -> tuple[list[dict[str, Any]], list[int]]:
        """Canonical messages of `chat` and the step indices flagged for training.

        Args:
            chat (`list[dict]`): One row's chat, in the source layout.
            row (`int`): The row's index, for the error message.

        Returns:
            `tuple[list[dict], list[int]]`: The canonical messages, and the steps its loss flags mark
            (empty without `loss_field`).

        Raises:
            `TrajectoryError`: The first thing that cannot be read, with the row, the field and a fix.
        """
        f = self.messages_field
        expected = f"a list of turns, dicts with `{self.role_field}` and `{self.content_field}`"
        if not isinstance(chat, (list, tuple)):
            fix = "Pass messages_field=... naming the chat column."
            raise TrajectoryError(row, f, f"expected {expected}; got {type(chat).__name__}.", fix)
        if not chat:
            fix = 'Pass on_error="skip" to drop it.'
            raise TrajectoryError(row, f, f"the chat is empty; expected {expected}.", fix)
        roles = dict(self.role_map)
        dropped = {self.role_field, self.content_field, self.loss_field, "role", "content"}
        messages: list[dict[str, Any]] = []
        critical: list[int] = []
        pending: list[dict[str, Any]] = []  # calls of a ShareGPT function_call turn awaiting their results
        steps = num_calls = 0
        for t, turn in enumerate(chat):
            where = f"{f}[{t}]"
            if not isinstance(turn, Mapping):
                raise TrajectoryError(row, where, f"expected a dict turn; got {type(turn).__name__}.")
            if self.role_field not in turn:
                raise TrajectoryError(
                    row,
                    f"{where}.{self.role_field}",
                    f"the turn has no `{self.role_field}` key (keys: {sorted(turn)}).",
                    "Pass role_field=... naming the key that holds the speaker.",
                )
            raw_role = turn[self.role_field]
            role = self._role(raw_role, roles, row, where)
            message = {"role": role, "content": turn.get(self.content_field)}
            message.update(clean_message({k: v for k, v in turn.items() if k not in dropped}))
            if role == "tool":
                if pending and "tool_call_id" not in message:
                    call = pending.pop(0)
                    message["tool_call_id"], message["name"] = call["id"], call["function"]["name"]
            else:
                pending = []
            is_call = raw_role.strip().lower() == "function_call" and role == "assistant"
            if is_call and "tool_calls" not in message:
                calls = parse_function_call(message["content"], num_calls)
                if calls is not None:
                    message["content"], message["tool_calls"] = None, calls
                    num_calls += len(calls)
                    pending = list(calls)
            self._check_content(message, row, where)
            if role == "assistant":
                if self.loss_field is not None and self._loss(turn.get(self.loss_field), row, where):
                    critical.append(steps)
                steps += 1
            messages.append(message)
        if not steps:
            seen = sorted({str(turn[self.role_field]) for turn in chat})
            raise TrajectoryError(
                row,
                f,
                f"no assistant turn (roles seen: {seen}); a trajectory needs at least one step.",
                "If the agent's turns use another role name, pass role_map={name: 'assistant'}; "
                'or pass on_error="skip" to drop such rows.',
            )
        return messages, critical
