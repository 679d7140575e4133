"""A scripted OpenAI-compatible server on 127.0.0.1, for tests and GPU-free dry runs.

`respond(prompt, body)` returns the texts of one request (`body["n"]` of them are expected);
an exception in it becomes an HTTP 500. Every request body is recorded, with its "path".
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Sequence

Responder = Callable[[str, dict], Sequence[str]]


class FakeOpenAIServer:
    """Serves /v1/models, /v1/completions and /v1/chat/completions from a `Responder`."""

    def __init__(self, respond: Responder, model: str = "fake-model"):
        self.respond = respond
        self.model = model
        self.requests: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        # A short poll interval: shutdown() waits up to one interval.
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> "FakeOpenAIServer":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def record(self, body: dict[str, Any]) -> None:
        with self._lock:
            self.requests.append(body)

    def reply(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """The OpenAI-shaped reply to one completion request (word count = token count)."""
        chat = path.endswith("/chat/completions")
        prompt = body["messages"][-1]["content"] if chat else body["prompt"]
        texts = list(self.respond(prompt, body))
        choices = [
            {"index": i, "message": {"role": "assistant", "content": t}} if chat
            else {"index": i, "text": t}
            for i, t in enumerate(texts)
        ]
        tokens = sum(len(t.split()) for t in texts)
        return {"object": "chat.completion" if chat else "text_completion",
                "model": self.model, "choices": choices,
                "usage": {"completion_tokens": tokens}}


def _handler_for(server: FakeOpenAIServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            if self.path.rstrip("/") == "/v1/models":
                self._send(200, {"object": "list", "data": [{"id": server.model}]})
            else:
                self._send(404, {"error": f"no route {self.path}"})

        def do_POST(self) -> None:  # noqa: N802
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length) or b"{}")
            server.record({**body, "path": self.path})
            if self.path not in ("/v1/completions", "/v1/chat/completions"):
                self._send(404, {"error": f"no route {self.path}"})
                return
            try:
                self._send(200, server.reply(self.path, body))
            except Exception as e:  # the script failed: tell the client, as a server would
                self._send(500, {"error": f"{type(e).__name__}: {e}"})

        def _send(self, status: int, payload: dict) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: object) -> None:  # keep test output clean
            pass

    return Handler
