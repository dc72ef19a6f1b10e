"""A scripted OpenAI-compatible chat server on loopback, for the LLM agent's tests.

It speaks ``POST /v1/chat/completions`` over real HTTP, so the ``openai`` SDK runs as it does
in production (timeouts, status errors, response parsing). Replies come from a queue of
steps; ``refuse`` makes it answer some structured-output modes with an HTTP error, as real
servers do (llama-cpp-python's answers ``json_schema`` with 500). Every request body is kept.

Example:
    with LlmServer(refuse={"json_schema": 500}) as server:
        server.script(Content('{"hypotheses": []}'))
        agent = LlmAgent(base_url=server.base_url, ...)
"""

import json
import threading
from collections import deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

# A server taking only llama.cpp's json_object-with-schema extension. llama-cpp-python 0.3.36
# answers json_schema with 500 (its request model knows only text and json_object), as some
# OpenAI-compatible servers do with tool calls.
JSON_OBJECT_ONLY = {"tool": 500, "json_schema": 500}


@dataclass(frozen=True)
class Content:
    """A reply whose message content is ``text``."""

    text: str
    prompt_tokens: int = 11
    completion_tokens: int = 7


@dataclass(frozen=True)
class ToolCall:
    """A reply calling ``name`` with ``arguments`` (a JSON string, or anything at all)."""

    arguments: str
    name: str = "propose_hypotheses"
    prompt_tokens: int = 11
    completion_tokens: int = 7


@dataclass(frozen=True)
class Status:
    """An HTTP error with an OpenAI-style error body."""

    code: int
    message: str = "scripted error"


@dataclass(frozen=True)
class Delay:
    """Wait ``seconds`` before answering with ``then``."""

    seconds: float
    then: "Step"


Step = Content | ToolCall | Status | Delay


def request_mode(body: dict[str, Any]) -> str:
    """How a request asks for structured output: tool, json_schema, json_object or plain."""
    if body.get("tools"):
        return "tool"
    response_format = body.get("response_format") or {}
    return str(response_format.get("type", "plain"))


class LlmServer:
    """A chat-completions server answering from a script.

    Args:
        refuse: Modes (``tool``, ``json_schema``, ``json_object``) answered with this HTTP
            status without consuming a step.
    """

    def __init__(self, refuse: dict[str, int] | None = None) -> None:
        self.refuse = dict(refuse or {})
        self.requests: list[dict[str, Any]] = []
        self._steps: deque[Step] = deque()
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._httpd.daemon_threads = True
        # A short poll so that closing takes milliseconds, not serve_forever's default 0.5 s.
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    @property
    def base_url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}/v1"

    def script(self, *steps: Step) -> None:
        """Queue replies, answered in order, one per request not refused."""
        with self._lock:
            self._steps.extend(steps)

    @property
    def pending(self) -> int:
        """Steps not yet answered."""
        with self._lock:
            return len(self._steps)

    def modes(self) -> list[str]:
        """The mode of every request received, in order."""
        return [request_mode(body) for body in self.requests]

    def __enter__(self) -> "LlmServer":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._closing.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def _answer(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """The status and JSON body for one request; waits out a Delay step."""
        with self._lock:
            self.requests.append(body)
            mode = request_mode(body)
            if mode in self.refuse:
                return self.refuse[mode], _error(f"mode {mode} is not supported")
            step = self._steps.popleft() if self._steps else Status(500, "no scripted reply left")
        while isinstance(step, Delay):
            if self._closing.wait(step.seconds):
                return 503, _error("server closing")
            step = step.then
        if isinstance(step, Status):
            return step.code, _error(step.message)
        return 200, _completion(body, step)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as the SDK's connection pool expects
            # Headers and body go out in two writes: without this, Nagle's algorithm and
            # delayed ACKs add ~40 ms to every kept-alive exchange.
            disable_nagle_algorithm = True

            def do_POST(self) -> None:
                if self.path.rstrip("/") != "/v1/chat/completions":
                    self._send(404, _error(f"no route {self.path}"))
                    return
                length = int(self.headers.get("Content-Length", "0"))
                try:
                    body = json.loads(self.rfile.read(length))
                except json.JSONDecodeError:
                    self._send(400, _error("request body is not JSON"))
                    return
                self._send(*server._answer(body))

            def _send(self, code: int, payload: dict[str, Any]) -> None:
                data = json.dumps(payload).encode()
                try:
                    self.send_response(code)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (its timeout): nothing to answer

            def log_message(self, format: str, *args: Any) -> None:
                pass  # quiet: the tests read self.requests instead

        return Handler


def _error(message: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": "scripted", "code": None}}


def _completion(body: dict[str, Any], step: Content | ToolCall) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": None}
    if isinstance(step, ToolCall):
        message["tool_calls"] = [
            {
                "id": "call_0",
                "type": "function",
                "function": {"name": step.name, "arguments": step.arguments},
            }
        ]
        finish = "tool_calls"
    else:
        message["content"] = step.text
        finish = "stop"
    return {
        "id": "chatcmpl-scripted",
        "object": "chat.completion",
        "created": 0,
        "model": body.get("model", ""),
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "usage": {
            "prompt_tokens": step.prompt_tokens,
            "completion_tokens": step.completion_tokens,
            "total_tokens": step.prompt_tokens + step.completion_tokens,
        },
    }
