"""A scripted OpenAI-compatible chat-completions server, for tests and benchmarks.

The real `openai` SDK (through AutoGen) talks to it over HTTP on 127.0.0.1, so the whole client
path runs for real. It counts tokens itself (one token per whitespace-separated word, plus one per
message), and remembers every request it served, so that tests can compare what the server
reports against what the endpoint counted.

A reply may call tools (`tool_reply(call("add", a=2, b=3))`): it then carries OpenAI
`tool_calls`, streamed or not.

Run standalone: `python tests/support/scripted_llm.py --port 0 --latency 0.5` prints its URL and
answers every call with a fixed reply ending in TERMINATE.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class _Server(ThreadingHTTPServer):
    """A listen backlog like a real endpoint's: the standard library's is 5, and a hundred runs
    connecting at once overflowed it (a connection reset, a run failed as an endpoint failure)."""

    request_queue_size = 1024


@dataclass
class Reply:
    content: str
    delay: float = 0.0
    status: int = 200
    model: str | None = None
    # Function calling: the tools the reply calls, as `call("add", a=2, b=3)` makes them.
    tool_calls: list[dict[str, Any]] | None = None


def call(name: str, **arguments: Any) -> dict[str, Any]:
    """One tool call for `Reply.tool_calls`."""
    return {"id": f"call_{uuid.uuid4().hex[:10]}", "name": name, "arguments": arguments}


def tool_reply(*calls: dict[str, Any], content: str = "") -> Reply:
    """A reply that calls these tools (and says `content`, usually nothing)."""
    return Reply(content, tool_calls=list(calls))


Responder = Callable[[dict[str, Any]], "Reply | str"]


@dataclass
class Served:
    body: dict[str, Any]
    model: str
    prompt_tokens: int
    completion_tokens: int
    status: int
    started: float
    ended: float
    authorization: str = ""

    @property
    def system(self) -> str:
        msgs = self.body.get("messages", [])
        return str(msgs[0].get("content", "")) if msgs and msgs[0].get("role") == "system" else ""

    @property
    def last_user_text(self) -> str:
        msgs = self.body.get("messages", [])
        return str(msgs[-1].get("content", "")) if msgs else ""


def count_tokens(text: str) -> int:
    return len(text.split())


def prompt_tokens(body: dict[str, Any]) -> int:
    total = 0
    for msg in body.get("messages", []):
        content = msg.get("content") or ""
        if isinstance(content, list):
            content = " ".join(p.get("text", "") for p in content if isinstance(p, dict))
        total += count_tokens(str(content)) + 1
    return total


@dataclass
class ScriptedLLM:
    """Start with `start()`; set `responder` (or `queue()` replies) before each scenario."""

    latency: float = 0.0
    responder: Responder | None = None
    served: list[Served] = field(default_factory=list)
    _queue: deque[Reply | str] = field(default_factory=deque)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _in_flight: int = 0
    max_in_flight: int = 0
    # Requests received (any path), counted as they arrive: a call still being answered counts.
    arrived: int = 0
    _server: ThreadingHTTPServer | None = None
    # Bumped by reset(): calls that began before it (a cancelled run's abandoned call, still
    # being answered) are not counted in the next scenario.
    generation: int = 0
    # When set, every chat call is answered 200 with this body as it is (not a chat completion).
    raw_reply: str | None = None

    # scripting ----------------------------------------------------------------------------------

    def queue(self, *replies: Reply | str) -> None:
        with self._lock:
            self._queue.extend(replies)

    def reset(self) -> None:
        with self._lock:
            self._queue.clear()
            self.served.clear()
            self.responder = None
            self.max_in_flight = 0
            self._in_flight = 0
            self.arrived = 0
            self.raw_reply = None
            self.generation += 1

    def _next_reply(self, body: dict[str, Any]) -> Reply:
        with self._lock:
            queued = self._queue.popleft() if self._queue else None
        if queued is None and self.responder is not None:
            queued = self.responder(body)
        if queued is None:
            queued = "OK. TERMINATE"
        return queued if isinstance(queued, Reply) else Reply(str(queued))

    # counting -----------------------------------------------------------------------------------

    def counted(self, since: int = 0) -> dict[str, int]:
        """Tokens the endpoint counted for successful calls served after index `since`."""
        with self._lock:
            ok = [s for s in self.served[since:] if s.status == 200]
        return {
            "calls": len(ok),
            "prompt_tokens": sum(s.prompt_tokens for s in ok),
            "completion_tokens": sum(s.completion_tokens for s in ok),
        }

    # serving ------------------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/v1"

    def start(self, port: int = 0) -> ScriptedLLM:
        llm = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body go out in two writes: on a kept-alive connection Nagle's algorithm
            # would hold the body until the client's delayed ACK (~40 ms), a delay no real
            # endpoint adds and one that would swamp what the benchmarks measure.
            disable_nagle_algorithm = True

            def log_message(self, *_args: Any) -> None:
                return None

            def do_POST(self) -> None:
                with llm._lock:
                    llm.arrived += 1
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                if not self.path.rstrip("/").endswith("/chat/completions"):
                    self._json(404, {"error": {"message": f"no route {self.path}"}})
                    return
                llm._serve(self, body, self.headers.get("Authorization", ""))

            def _json(self, status: int, payload: dict[str, Any]) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self._server = _Server(("127.0.0.1", port), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True, name="scripted-llm").start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def _serve(self, handler: Any, body: dict[str, Any], authorization: str = "") -> None:
        started = time.monotonic()
        with self._lock:
            generation = self.generation
            self._in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self._in_flight)
        try:
            if self.raw_reply is not None:
                data = self.raw_reply.encode()
                handler.send_response(200)
                handler.send_header("Content-Type", "application/json")
                handler.send_header("Content-Length", str(len(data)))
                handler.end_headers()
                handler.wfile.write(data)
                return
            reply = self._next_reply(body)
            delay = reply.delay or self.latency
            if delay:
                time.sleep(delay)
            model = reply.model or str(body.get("model", "scripted"))
            p_tokens, c_tokens = prompt_tokens(body), max(1, count_tokens(reply.content))
            if reply.tool_calls:
                c_tokens += sum(count_tokens(json.dumps(c["arguments"])) + 1 for c in reply.tool_calls)
            if reply.status != 200:
                p_tokens = c_tokens = 0
            # Recorded before the answer leaves: whoever got the answer finds the call counted.
            with self._lock:
                if generation == self.generation:
                    self.served.append(
                        Served(
                            body,
                            model,
                            p_tokens,
                            c_tokens,
                            reply.status,
                            started,
                            time.monotonic(),
                            authorization,
                        )
                    )
            if reply.status != 200:
                handler._json(reply.status, {"error": {"message": reply.content, "type": "server_error"}})
            elif body.get("stream"):
                self._stream(handler, body, model, reply.content, p_tokens, c_tokens, reply.tool_calls)
            else:
                handler._json(200, _completion(model, reply.content, p_tokens, c_tokens, reply.tool_calls))
        finally:
            with self._lock:
                if generation == self.generation:
                    self._in_flight -= 1

    @staticmethod
    def _stream(
        handler: Any,
        body: dict[str, Any],
        model: str,
        text: str,
        p: int,
        c: int,
        tool_calls: list[dict[str, Any]] | None = None,
    ) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", "text/event-stream")
        handler.send_header("Connection", "close")
        handler.end_headers()
        cid = f"chatcmpl-{uuid.uuid4().hex[:12]}"
        words = text.split(" ") if text or not tool_calls else []
        for i, call_ in enumerate(tool_calls or []):
            delta = {"role": "assistant", "tool_calls": [dict(_wire_call(call_), index=i)]}
            chunk = {
                "id": cid,
                "object": "chat.completion.chunk",
                "created": int(time.time()),
                "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": None}],
            }
            handler.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
        for i, word in enumerate(words):
            piece = word if i == 0 else " " + word
            chunk = {
                "id": cid,
                "object": "chat.completion.chunk",
                "created": int(time.time()),
                "model": model,
                "choices": [
                    {"index": 0, "delta": {"role": "assistant", "content": piece}, "finish_reason": None}
                ],
            }
            handler.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
        final: dict[str, Any] = {
            "id": cid,
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": model,
            "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls" if tool_calls else "stop"}],
        }
        handler.wfile.write(f"data: {json.dumps(final)}\n\n".encode())
        if (body.get("stream_options") or {}).get("include_usage"):
            usage = {
                "id": cid,
                "object": "chat.completion.chunk",
                "created": int(time.time()),
                "model": model,
            }
            usage["choices"] = []
            usage["usage"] = {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}
            handler.wfile.write(f"data: {json.dumps(usage)}\n\n".encode())
        handler.wfile.write(b"data: [DONE]\n\n")
        handler.wfile.flush()
        handler.close_connection = True


def _wire_call(call_: dict[str, Any]) -> dict[str, Any]:
    arguments = call_["arguments"]
    return {
        "id": call_.get("id") or f"call_{uuid.uuid4().hex[:10]}",
        "type": "function",
        "function": {
            "name": call_["name"],
            "arguments": arguments if isinstance(arguments, str) else json.dumps(arguments),
        },
    }


def _completion(
    model: str, text: str, p: int, c: int, tool_calls: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": text}
    if tool_calls:
        message = {
            "role": "assistant",
            "content": text or None,
            "tool_calls": [_wire_call(t) for t in tool_calls],
        }
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex[:12]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "finish_reason": "tool_calls" if tool_calls else "stop",
                "logprobs": None,
            }
        ],
        "usage": {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency", type=float, default=0.0)
    parser.add_argument("--reply", default="Done. TERMINATE")
    args = parser.parse_args()
    llm = ScriptedLLM(latency=args.latency, responder=lambda _body: args.reply).start(args.port)
    print(llm.base_url, flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        llm.stop()


if __name__ == "__main__":
    main()
