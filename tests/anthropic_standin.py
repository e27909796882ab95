"""A loopback stand-in of the Anthropic Messages API, for tests and benchmarks.

A real HTTP server (stdlib `ThreadingHTTPServer` on 127.0.0.1, a free port, in a thread) that
speaks the parts of the API the oracle uses, with the JSON shapes of the installed SDK's types:
`POST /v1/messages`, `POST /v1/messages/count_tokens`, `POST /v1/messages/batches`,
`GET /v1/messages/batches/{id}` and its `results_url` (JSONL). It checks each request's shape
(key, version and content-type headers; model, max_tokens, tools, tool_choice, cache_control) and
answers 400/401 like the API when they are wrong, records every request, and can inject faults.

Token counts are a deterministic approximation, NOT Claude's tokenizer: `len(text) // 4` of the
request's text (system, tools as JSON, messages). Prompt caching is simulated: the prefix up to
the last `cache_control` breakpoint (tools, then system), when at least `min_cacheable_tokens`
long, is written by the first request of a cache window (`cache_creation_input_tokens`) and read
by later ones (`cache_read_input_tokens`); like the real cache, an entry is readable only once the
request that writes it has been answered, so concurrent cold requests all write it.
"""

from __future__ import annotations

import collections
import json
import re
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

CATEGORIES = ("Plan Creation", "Critical Observation", "Critical Action", "Self Correction")
CUSTOM_ID = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")

Responder = Callable[[dict[str, Any]], dict[str, Any]]


@dataclass
class Fault:
    """One injected fault, consumed by the next `POST /v1/messages` (or batch request item).

    kind: "429" (with `retry_after` seconds), "529", "500", "drop" (close the socket without a
    response), "timeout" (sleep `seconds` before answering), "malformed" (tool input that is not
    an answer), "out_of_range" (a step index past the end), "cap_overrun" (every step chosen),
    "batch_errored" (a batch item whose result is `errored`), "poll_500" (the next `GET` answers 500),
    "create_batch_500" (a batch creation answers 500 and creates nothing), "create_batch_drop" (the
    batch is created, then the connection closes without a reply), "create_batch_hang" (the batch
    is created, the reply comes only after `seconds`: long enough to kill the client meanwhile).
    Odd 200 replies: "malformed_json" (a body cut off mid-JSON), "no_usage" (no `usage` field),
    "null_content" (`content: null`), "refusal" and "max_tokens" (a tool_use block whose
    `stop_reason` is not "tool_use").
    after: how many requests this fault would apply to go through untouched first.
    """

    kind: str
    retry_after: float = 1.0
    seconds: float = 2.0
    after: int = 0


def approx_tokens(value: Any) -> int:
    """The stand-in's token count: `len(text) // 4` of a string or of an object's JSON."""
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return len(text) // 4


def _user_text(request: dict[str, Any]) -> str:
    parts = []
    for message in request.get("messages", []):
        content = message.get("content")
        if isinstance(content, str):
            parts.append(content)
        else:
            parts += [b.get("text", "") for b in content or [] if isinstance(b, dict)]
    return "\n".join(parts)


def prompt_shape(request: dict[str, Any]) -> tuple[int, int]:
    """(number of steps, cap) as a model would read them off the prompt's text."""
    text = _user_text(request)
    steps = {int(n) for n in re.findall(r"^### Step (\d+)$", text, flags=re.M)}
    cap = re.search(r"at most (\d+) of the", text)
    return len(steps), int(cap.group(1)) if cap else 1


def default_responder(request: dict[str, Any]) -> dict[str, Any]:
    """A deterministic valid answer: the first step, the last, then evenly spaced ones, up to the cap."""
    n, cap = prompt_shape(request)
    chosen: list[int] = []
    for candidate in [0, n - 1] + [round(i * (n - 1) / max(cap, 1)) for i in range(1, cap)]:
        if 0 <= candidate < n and candidate not in chosen and len(chosen) < cap:
            chosen.append(candidate)
    chosen.sort()
    return {
        "plan": f"Solve the task in {n} steps.",
        "critical_steps": [
            {"step": s, "category": CATEGORIES[i % 4], "reason": f"step {s} matters"} for i, s in enumerate(chosen)
        ],
    }


def _faulty_input(kind: str, request: dict[str, Any]) -> dict[str, Any]:
    n, _ = prompt_shape(request)
    if kind == "malformed":
        return {"plan": 3, "critical_steps": "the second and the fourth"}
    if kind == "out_of_range":
        return {"plan": "p", "critical_steps": [{"step": n + 5, "category": "Critical Action", "reason": "r"}]}
    return {  # cap_overrun
        "plan": "p",
        "critical_steps": [{"step": s, "category": "Critical Action", "reason": "r"} for s in range(n)],
    }


_ODD_REPLIES = ("malformed_json", "no_usage", "null_content", "refusal", "max_tokens")


def _odd_reply(kind: str, message: dict[str, Any]) -> Any:
    """A 200 reply that a careless client would trust or choke on."""
    if kind == "malformed_json":
        return json.dumps(message).encode()[:60]
    if kind == "no_usage":
        return {k: v for k, v in message.items() if k != "usage"}
    if kind == "null_content":
        return {**message, "content": None}
    return {**message, "stop_reason": kind}  # refusal, max_tokens: the tool_use block is still there


def _error(kind: str, message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": kind, "message": message}, "request_id": f"req_{uuid.uuid4().hex[:24]}"}


class AnthropicStandIn:
    """The stand-in server; use as a context manager, then point `base_url` at `.base_url`.

    Args:
        api_key: the only key accepted (`x-api-key` or `Authorization: Bearer`), else 401.
        responder: `request_json -> tool input` for each answered request.
        latency: seconds each Messages request takes (count_tokens and batch polls are instant).
        min_cacheable_tokens: a shorter prefix is not cached (as with the real API).
        cache_ttl: seconds a cached prefix lives after its last use.
        require_cache_control: answer 400 when neither a system block nor a tool has cache_control.
        batch_polls_until_end: how many `GET` polls a batch stays `in_progress`.
    """

    def __init__(
        self,
        api_key: str = "test-anthropic-standin-key",
        responder: Responder = default_responder,
        latency: float = 0.0,
        min_cacheable_tokens: int = 1024,
        cache_ttl: float = 300.0,
        require_cache_control: bool = True,
        batch_polls_until_end: int = 2,
    ) -> None:
        self.api_key = api_key
        self.responder = responder
        self.latency = latency
        self.min_cacheable_tokens = min_cacheable_tokens
        self.cache_ttl = cache_ttl
        self.require_cache_control = require_cache_control
        self.batch_polls_until_end = batch_polls_until_end
        self.faults: collections.deque[Fault] = collections.deque()
        self.requests: list[dict[str, Any]] = []
        self.batches: dict[str, dict[str, Any]] = {}
        self.in_flight = 0
        self.max_in_flight = 0
        self._cache: dict[str, float] = {}
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    # ------------------------------------------------------------ lifecycle

    def __enter__(self) -> "AnthropicStandIn":
        standin = self

        class Handler(_Handler):
            server_state = standin

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            request_queue_size = 256  # many concurrent connects without SYN retries

        self._server = Server(("127.0.0.1", 0), Handler)
        threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="anthropic-standin", daemon=True
        ).start()
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.shutdown()
        self._server.server_close()

    @property
    def base_url(self) -> str:
        assert self._server is not None, "start the stand-in with `with AnthropicStandIn() as api:`"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def inject(self, *faults: Fault | str) -> None:
        """Queue faults; each is consumed by one later request, in order."""
        self.faults.extend(f if isinstance(f, Fault) else Fault(f) for f in faults)

    def paths(self, method: str | None = None) -> list[str]:
        """The paths of the recorded requests (optionally of one method), in arrival order."""
        return [r["path"] for r in self.requests if method is None or r["method"] == method]

    def reset_cache(self) -> None:
        """Forget every cached prefix (a new cache window)."""
        with self._lock:
            self._cache.clear()

    # ------------------------------------------------------------ the API's behaviour

    def _next_fault(self, kinds: tuple[str, ...]) -> Fault | None:
        with self._lock:
            if self.faults and self.faults[0].kind in kinds:
                if self.faults[0].after:
                    self.faults[0].after -= 1
                    return None
                return self.faults.popleft()
        return None

    def validate_message_request(self, body: Any, generating: bool = True) -> str | None:
        """Why `body` is not a valid Messages request (the API's 400), or None."""
        if not isinstance(body, dict):
            return "the request body must be a JSON object."
        if not isinstance(body.get("model"), str) or not body["model"]:
            return "model: field required."
        if generating and (not isinstance(body.get("max_tokens"), int) or body["max_tokens"] < 1):
            return "max_tokens: field required (a positive integer)."
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages or messages[0].get("role") != "user":
            return "messages: a non-empty list starting with a user turn is required."
        tools = body.get("tools", [])
        names = set()
        for i, tool in enumerate(tools):
            schema = tool.get("input_schema")
            if not isinstance(tool.get("name"), str) or not isinstance(schema, dict) or schema.get("type") != "object":
                return f"tools.{i}: name and an input_schema of type object are required."
            names.add(tool["name"])
        choice = body.get("tool_choice")
        if choice is not None:
            if choice.get("type") not in ("auto", "any", "tool", "none"):
                return f"tool_choice.type: unknown value {choice.get('type')!r}."
            if choice["type"] == "tool" and choice.get("name") not in names:
                return f"tool_choice.name: {choice.get('name')!r} is not among the tools {sorted(names)}."
        if self.require_cache_control and self.prefix(body) is None:
            return "stand-in: no cache_control breakpoint on the system prompt or tools."
        return None

    @staticmethod
    def prefix(body: dict[str, Any]) -> list[Any] | None:
        """The cacheable prefix (tools, then system blocks) up to the last breakpoint, or None."""
        system = body.get("system", [])
        blocks = list(body.get("tools", [])) + (
            [{"type": "text", "text": system}] if isinstance(system, str) else system
        )
        marked = [i for i, b in enumerate(blocks) if isinstance(b, dict) and b.get("cache_control")]
        if not marked:
            return None
        for block in blocks[: marked[-1] + 1]:
            if block.get("cache_control", {}).get("type") not in (None, "ephemeral"):
                return None
        return blocks[: marked[-1] + 1]

    def count_tokens(self, body: dict[str, Any]) -> int:
        """Input tokens of a request under the stand-in's approximation."""
        system = body.get("system", "")
        system_text = system if isinstance(system, str) else "".join(b.get("text", "") for b in system)
        return approx_tokens(system_text) + approx_tokens(body.get("tools", [])) + approx_tokens(_user_text(body))

    def cache_lookup(self, body: dict[str, Any]) -> tuple[int, int, Callable[[], None]]:
        """(tokens written, tokens read) of the request's prefix, looked up as the request arrives,
        and the callback that makes the prefix readable once the request has been answered."""
        prefix = self.prefix(body)
        if prefix is None:
            return 0, 0, lambda: None
        system_blocks = [b for b in prefix if "input_schema" not in b]
        tools = [b for b in prefix if "input_schema" in b]
        size = approx_tokens("".join(b.get("text", "") for b in system_blocks)) + approx_tokens(tools)
        if size < self.min_cacheable_tokens:
            return 0, 0, lambda: None
        key = json.dumps([body.get("model"), prefix], sort_keys=True)
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(key, 0.0) > now
            if hit:
                self._cache[key] = now + self.cache_ttl

        def commit() -> None:
            with self._lock:
                self._cache[key] = time.monotonic() + self.cache_ttl

        return (0, size, commit) if hit else (size, 0, commit)

    def answer(
        self, body: dict[str, Any], tool_input: dict[str, Any], cached: tuple[int, int], batch: bool = False
    ) -> dict[str, Any]:
        """A Message (the SDK's `Message` shape) calling the forced tool with `tool_input`."""
        tool_name = (body.get("tool_choice") or {}).get("name") or body["tools"][0]["name"]
        write, read = cached
        usage = {
            "input_tokens": self.count_tokens(body) - write - read,
            "output_tokens": max(1, approx_tokens(tool_input)),
            "cache_creation_input_tokens": write,
            "cache_read_input_tokens": read,
            "service_tier": "batch" if batch else "standard",
        }
        return {
            "id": f"msg_{uuid.uuid4().hex[:24]}",
            "type": "message",
            "role": "assistant",
            "model": body["model"],
            "content": [
                {"type": "tool_use", "id": f"toolu_{uuid.uuid4().hex[:24]}", "name": tool_name, "input": tool_input}
            ],
            "stop_reason": "tool_use",
            "stop_sequence": None,
            "usage": usage,
        }

    def batch_json(self, batch: dict[str, Any]) -> dict[str, Any]:
        """The SDK's `MessageBatch` shape of a stored batch."""
        ended = batch["status"] == "ended"
        n = len(batch["results"])
        errored = sum(1 for r in batch["results"] if r["result"]["type"] == "errored")
        return {
            "id": batch["id"],
            "type": "message_batch",
            "processing_status": batch["status"],
            "request_counts": {
                "processing": 0 if ended else n,
                "succeeded": n - errored if ended else 0,
                "errored": errored if ended else 0,
                "canceled": 0,
                "expired": 0,
            },
            "created_at": batch["created_at"],
            "expires_at": batch["expires_at"],
            "ended_at": batch["created_at"] if ended else None,
            "archived_at": None,
            "cancel_initiated_at": None,
            "results_url": f"{self.base_url}/v1/messages/batches/{batch['id']}/results" if ended else None,
        }


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_state: AnthropicStandIn

    def setup(self) -> None:
        super().setup()
        # headers and body go out in separate writes: without this, Nagle's algorithm meets the
        # client's delayed ACK and adds ~40 ms to every response
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    # ------------------------------------------------------------ plumbing

    def _send(self, status: int, payload: Any, headers: dict[str, str] | None = None, jsonl: bool = False) -> None:
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        try:
            self.send_response(status)
            self.send_header("content-type", "application/binary" if jsonl else "application/json")
            self.send_header("content-length", str(len(data)))
            self.send_header("request-id", f"req_{uuid.uuid4().hex[:24]}")
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout fault)
            self.close_connection = True

    def _record(self, body: Any) -> dict[str, Any]:
        record = {
            "method": self.command,
            "path": self.path,
            "headers": {k.lower(): v for k, v in self.headers.items()},
            "json": body,
            "start": time.monotonic(),
        }
        with self.server_state._lock:
            self.server_state.requests.append(record)
        return record

    def _check_headers(self, with_body: bool) -> bool:
        state = self.server_state
        # SDK 2.x sends the key as `Authorization: Bearer`; older ones as `x-api-key`. Both are accepted.
        sent = self.headers.get("x-api-key") or (self.headers.get("authorization") or "").removeprefix("Bearer ")
        if sent != state.api_key:
            self._send(401, _error("authentication_error", "invalid x-api-key"))
            return False
        if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", self.headers.get("anthropic-version", "")):
            self._send(400, _error("invalid_request_error", "anthropic-version: header is required (YYYY-MM-DD)."))
            return False
        if with_body and not (self.headers.get("content-type") or "").startswith("application/json"):
            self._send(400, _error("invalid_request_error", "content-type must be application/json."))
            return False
        return True

    def _read_json(self) -> Any:
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            return json.loads(raw) if raw else None
        except json.JSONDecodeError:
            return raw.decode(errors="replace")

    # ------------------------------------------------------------ routes

    def do_POST(self) -> None:  # noqa: N802
        body = self._read_json()
        self._record(body)
        if not self._check_headers(with_body=True):
            return
        if self.path == "/v1/messages":
            self._messages(body)
        elif self.path == "/v1/messages/count_tokens":
            problem = self.server_state.validate_message_request(body, generating=False)
            if problem:
                self._send(400, _error("invalid_request_error", problem))
            else:
                self._send(200, {"input_tokens": self.server_state.count_tokens(body)})
        elif self.path == "/v1/messages/batches":
            self._create_batch(body)
        else:
            self._send(404, _error("not_found_error", f"no route POST {self.path}"))

    def do_GET(self) -> None:  # noqa: N802
        self._record(None)
        if not self._check_headers(with_body=False):
            return
        state = self.server_state
        if state._next_fault(("poll_500",)):
            self._send(500, _error("api_error", "Internal server error"))
            return
        if self.path.split("?")[0] == "/v1/messages/batches":  # the list, newest first
            data = [
                state.batch_json(b)
                for b in sorted(state.batches.values(), key=lambda b: b["created_at"], reverse=True)
            ]
            self._send(
                200,
                {
                    "data": data,
                    "has_more": False,
                    "first_id": data[0]["id"] if data else None,
                    "last_id": data[-1]["id"] if data else None,
                },
            )
            return
        match = re.fullmatch(r"/v1/messages/batches/([^/]+)(/results)?", self.path)
        batch = state.batches.get(match.group(1)) if match else None
        if batch is None:
            self._send(404, _error("not_found_error", f"no batch at {self.path}"))
        elif match.group(2):
            if batch.get("results_gone"):
                self._send(404, _error("not_found_error", f"the results of batch {batch['id']} have expired"))
            elif batch["status"] != "ended":
                self._send(400, _error("invalid_request_error", "batch results are not ready"))
            else:
                lines = "".join(json.dumps(r) + "\n" for r in reversed(batch["results"]))  # any order
                self._send(200, lines.encode(), jsonl=True)
        else:
            with state._lock:
                batch["polls"] += 1
                if batch["polls"] > state.batch_polls_until_end:
                    batch["status"] = "ended"
            self._send(200, state.batch_json(batch))

    def _messages(self, body: Any) -> None:
        state = self.server_state
        problem = state.validate_message_request(body)
        if problem:
            self._send(400, _error("invalid_request_error", problem))
            return
        fault = state._next_fault(
            ("429", "529", "500", "drop", "timeout", "malformed", "out_of_range", "cap_overrun", *_ODD_REPLIES)
        )
        if fault and fault.kind == "drop":
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        if fault and fault.kind == "429":
            self._send(429, _error("rate_limit_error", "rate limited"), {"retry-after": f"{fault.retry_after:g}"})
            return
        if fault and fault.kind == "529":
            self._send(529, _error("overloaded_error", "Overloaded"))
            return
        if fault and fault.kind == "500":
            self._send(500, _error("api_error", "Internal server error"))
            return
        with state._lock:
            state.in_flight += 1
            state.max_in_flight = max(state.max_in_flight, state.in_flight)
        try:
            write, read, commit = state.cache_lookup(body)
            time.sleep(fault.seconds if fault and fault.kind == "timeout" else state.latency)
            if fault and fault.kind in ("malformed", "out_of_range", "cap_overrun"):
                tool_input = _faulty_input(fault.kind, body)
            else:
                tool_input = state.responder(body)
            message = state.answer(body, tool_input, (write, read))
            if fault and fault.kind in _ODD_REPLIES:
                self._send(200, _odd_reply(fault.kind, message))
                return
            self._send(200, message)
            commit()
        finally:
            with state._lock:
                state.in_flight -= 1

    def _create_batch(self, body: Any) -> None:
        state = self.server_state
        fault = state._next_fault(("create_batch_500", "create_batch_drop", "create_batch_hang"))
        if fault and fault.kind == "create_batch_500":
            self._send(500, _error("api_error", "Internal server error"))
            return
        requests = body.get("requests") if isinstance(body, dict) else None
        if not isinstance(requests, list) or not requests:
            self._send(400, _error("invalid_request_error", "requests: a non-empty list is required."))
            return
        seen: set[str] = set()
        results = []
        for i, item in enumerate(requests):
            cid = item.get("custom_id", "")
            if not CUSTOM_ID.fullmatch(cid) or cid in seen:
                self._send(
                    400, _error("invalid_request_error", f"requests.{i}.custom_id: invalid or repeated {cid!r}.")
                )
                return
            seen.add(cid)
            problem = state.validate_message_request(item.get("params"))
            if problem:
                self._send(400, _error("invalid_request_error", f"requests.{i}.params: {problem}"))
                return
            if state._next_fault(("batch_errored",)):
                result = {"type": "errored", "error": _error("api_error", "Internal server error")}
            else:
                write, read, commit = state.cache_lookup(item["params"])
                message = state.answer(item["params"], state.responder(item["params"]), (write, read), batch=True)
                commit()
                result = {"type": "succeeded", "message": message}
            results.append({"custom_id": cid, "result": result})
        now = datetime.now(timezone.utc)
        batch = {
            "id": f"msgbatch_{uuid.uuid4().hex[:24]}",
            "status": "in_progress",
            "polls": 0,
            "results": results,
            "created_at": now.isoformat().replace("+00:00", "Z"),
            "expires_at": (now + timedelta(hours=24)).isoformat().replace("+00:00", "Z"),
        }
        with state._lock:
            state.batches[batch["id"]] = batch
        if fault and fault.kind == "create_batch_drop":
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        if fault and fault.kind == "create_batch_hang":
            time.sleep(fault.seconds)
        self._send(200, state.batch_json(batch))
