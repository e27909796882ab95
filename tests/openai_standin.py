"""A loopback stand-in of an OpenAI-compatible chat-completions server, for the faults a real one
does not produce on demand.

A real HTTP server (stdlib `ThreadingHTTPServer` on 127.0.0.1, a free port, in a thread) that answers
`POST /v1/chat/completions` with the JSON shape of the installed `openai` SDK's `ChatCompletion`,
checks the request (bearer key, model, messages), records every request, and plays injected faults:
"429" (with `retry-after`), "500", "drop" (the socket closed without a reply), "malformed" (a body cut
off mid-JSON), "slow" (the reply after `seconds`), "400_tools" (a 400 for any request with tools, as
servers without tool support answer), "text_answer" (the answer as JSON in the text, no tool call),
"prose" (text with no JSON in it).

The answer to an oracle request picks the first step of the trajectory, as a tool call when tools are
offered; the answer to any other request is `reply(request)` (by default the last user message's
first word, as an echo policy).
"""

from __future__ import annotations

import json
import re
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable


@dataclass
class Fault:
    """One injected fault, consumed by the next request it applies to (after `after` untouched ones)."""

    kind: str
    retry_after: float = 1.0
    seconds: float = 2.0
    after: int = 0


def _answer(request: dict[str, Any]) -> dict[str, Any]:
    text = request["messages"][-1]["content"]
    steps = len(re.findall(r"^### Step \d+", text, re.MULTILINE)) or 1
    return {
        "plan": "Do the task.",
        "critical_steps": [{"step": steps - 1, "category": "Critical Action", "reason": "It finishes the task."}],
    }


def echo(request: dict[str, Any]) -> str:
    """The first word of the last user message."""
    last = [m for m in request["messages"] if m["role"] == "user"][-1]["content"]
    return (last.split() or [""])[0]


class OpenAIStandIn:
    """`with OpenAIStandIn(key="k") as server:` then `server.base_url`, `server.inject("429")`, `server.requests`."""

    def __init__(
        self,
        key: str | None = None,
        models: tuple[str, ...] = ("stand-in",),
        reply: Callable[[dict[str, Any]], str] = echo,
    ) -> None:
        self.key, self.models, self.reply = key, models, reply
        self.requests: list[dict[str, Any]] = []
        self.faults: list[Fault] = []
        self.lock = threading.Lock()

    def __enter__(self) -> "OpenAIStandIn":
        outer = self

        class Handler(_Handler):
            server_state = outer

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def inject(self, *faults: Fault | str) -> None:
        with self.lock:
            self.faults += [f if isinstance(f, Fault) else Fault(f) for f in faults]

    def next_fault(self, body: dict[str, Any]) -> Fault | None:
        with self.lock:
            for fault in self.faults:
                if fault.kind == "400_tools" and "tools" not in body:
                    continue
                if fault.after:
                    fault.after -= 1
                    return None
                if fault.kind != "400_tools":  # servers without tools refuse them every time
                    self.faults.remove(fault)
                return fault
        return None

    def completion(self, body: dict[str, Any], fault: Fault | None) -> dict[str, Any]:
        oracle = "record_critical_steps" in json.dumps(body.get("tools", [])) or "critical_steps" in json.dumps(
            body["messages"][0]
        )
        message: dict[str, Any] = {"role": "assistant", "content": None}
        if oracle and fault is not None and fault.kind == "prose":
            message["content"] = "I think the second step matters most."
        elif oracle and body.get("tools") and (fault is None or fault.kind != "text_answer"):
            message["tool_calls"] = [
                {
                    "id": f"call_{uuid.uuid4().hex[:8]}",
                    "type": "function",
                    "function": {"name": "record_critical_steps", "arguments": json.dumps(_answer(body))},
                }
            ]
        elif oracle:
            message["content"] = "Here is my answer:\n```json\n" + json.dumps(_answer(body)) + "\n```"
        else:
            message["content"] = self.reply(body)
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex[:12]}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body["model"],
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "finish_reason": "tool_calls" if message.get("tool_calls") else "stop",
                }
            ],
            "usage": {
                "prompt_tokens": len(json.dumps(body)) // 4,
                "completion_tokens": 20,
                "total_tokens": len(json.dumps(body)) // 4 + 20,
            },
        }


class _Handler(BaseHTTPRequestHandler):
    server_state: OpenAIStandIn
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def _send(
        self, status: int, payload: Any, headers: dict[str, str] | None = None, raw: bytes | None = None
    ) -> None:
        data = raw if raw is not None else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _error(self, status: int, message: str, kind: str, headers: dict[str, str] | None = None) -> None:
        self._send(status, {"error": {"message": message, "type": kind, "code": None}}, headers)

    def do_POST(self) -> None:  # noqa: N802
        state = self.server_state
        body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))) or b"{}")
        with state.lock:
            state.requests.append(
                {"path": self.path, "body": body, "authorization": self.headers.get("authorization")}
            )
        if self.path != "/v1/chat/completions":
            return self._error(404, f"no route {self.path}", "not_found")
        if state.key is not None and self.headers.get("authorization") != f"Bearer {state.key}":
            return self._error(401, "Incorrect API key provided.", "invalid_request_error")
        if body.get("model") not in state.models:
            return self._error(404, f"The model `{body.get('model')}` does not exist.", "invalid_request_error")
        if not isinstance(body.get("messages"), list) or not body["messages"]:
            return self._error(400, "messages must be a non-empty list", "invalid_request_error")
        fault = state.next_fault(body)
        kind = fault.kind if fault else None
        if kind == "429":
            return self._error(429, "Rate limit reached.", "rate_limit_error", {"retry-after": str(fault.retry_after)})
        if kind == "500":
            return self._error(500, "The server had an error.", "server_error")
        if kind == "400_tools":
            return self._error(400, "tools are not supported by this server", "invalid_request_error")
        if kind == "drop":
            self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True
            return None
        if kind == "slow":
            time.sleep(fault.seconds)
        payload = state.completion(body, fault)
        if kind == "malformed":
            return self._send(200, None, raw=json.dumps(payload).encode()[:40])
        return self._send(200, payload)
