"""A small OpenAI-compatible HTTP client (stdlib `urllib`) that sends many requests at once.

Sibling ToT branches must reach the server together, or a server-side scheduler has nothing to
group; so `complete_all` hands every request to a thread pool and returns in request order.
"""

from __future__ import annotations

import json
import socket
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

APIS = ("completions", "chat")
PAIR_APIS = {"tiny": "completions", "smollm2": "chat"}
"""The API each model pair of the repository is served for: the embedded GSM8K pair has no
chat template; SmolLM2-135M-Instruct is an instruction model and wants its chat template."""
_START_HINT = "is the server running? start it with `vllm serve <model>` or pass --endpoint"


class EndpointError(RuntimeError):
    """The endpoint could not be reached or answered with an error."""


@dataclass(frozen=True)
class Request:
    """One completion request; `vllm_xargs` goes into the JSON body unchanged."""

    prompt: str
    n: int = 1
    stop: tuple[str, ...] = ()
    seed: int | None = None
    vllm_xargs: Mapping[str, Any] | None = field(default=None)


@dataclass(frozen=True)
class Completion:
    """The `n` texts of one request, its output token count and its wall-clock latency."""

    texts: tuple[str, ...]
    completion_tokens: int
    latency_s: float


def api_root(endpoint: str) -> str:
    """ "http://h:8000/" and "http://h:8000/v1" both give "http://h:8000/v1"."""
    root = endpoint.rstrip("/")
    return root if root.endswith("/v1") else root + "/v1"


def first_model(endpoint: str, timeout_s: float = 30.0) -> str:
    """The id of the first model that `GET /v1/models` lists."""
    url = api_root(endpoint) + "/models"
    models = _http_json(url, None, timeout_s).get("data") or []
    if not models or not isinstance(models[0], dict) or "id" not in models[0]:
        raise EndpointError(f"{url} lists no models; pass --model")
    return str(models[0]["id"])


class OpenAIClient:
    """Sends `Request`s to `/v1/completions` or `/v1/chat/completions`."""

    def __init__(
        self,
        endpoint: str,
        model: str,
        *,
        api: str = "completions",
        temperature: float = 0.2,
        max_tokens: int = 100,
        ignore_eos: bool = False,
        timeout_s: float = 600.0,
        max_workers: int = 64,
    ):
        if api not in APIS:
            raise ValueError(f"unknown api {api!r}; valid choices: {', '.join(APIS)}")
        self.model = model
        self.api = api
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.ignore_eos = ignore_eos
        self.timeout_s = timeout_s
        path = "/chat/completions" if api == "chat" else "/completions"
        self.url = api_root(endpoint) + path
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="tot-http")

    def __enter__(self) -> "OpenAIClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def complete_all(self, requests: Sequence[Request]) -> list[Completion]:
        """Send all `requests` concurrently; results come back in request order."""
        return list(self._pool.map(self.complete, requests))

    def complete(self, request: Request) -> Completion:
        """Send one request and wait for its answer."""
        start = time.perf_counter()
        reply = _http_json(self.url, self._body(request), self.timeout_s)
        latency_s = time.perf_counter() - start
        choices = sorted(reply.get("choices") or [], key=lambda c: c.get("index", 0))
        texts = tuple(self._text(choice) for choice in choices)
        tokens = (reply.get("usage") or {}).get("completion_tokens") or 0
        return Completion(texts=texts, completion_tokens=int(tokens), latency_s=latency_s)

    def _body(self, request: Request) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model,
            "n": request.n,
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
        }
        if self.ignore_eos:  # vLLM's extension of the OpenAI body
            body["ignore_eos"] = True
        if self.api == "chat":
            body["messages"] = [{"role": "user", "content": request.prompt}]
        else:
            body["prompt"] = request.prompt
        if request.stop:
            body["stop"] = list(request.stop)
        if request.seed is not None:
            body["seed"] = request.seed
        if request.vllm_xargs:
            body["vllm_xargs"] = dict(request.vllm_xargs)
        return body

    def _text(self, choice: Mapping[str, Any]) -> str:
        if self.api == "chat":
            return str((choice.get("message") or {}).get("content") or "")
        return str(choice.get("text") or "")


def _http_json(url: str, body: Mapping[str, Any] | None, timeout_s: float) -> dict[str, Any]:
    """GET (body None) or POST JSON; every failure becomes an EndpointError naming the URL."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            payload = response.read()
    except urllib.error.HTTPError as e:
        detail = e.read().decode(errors="replace")[:300].replace("\n", " ")
        raise EndpointError(f"{url} returned HTTP {e.code}: {detail}") from None
    except urllib.error.URLError as e:
        raise EndpointError(f"cannot reach {url} ({e.reason}); {_START_HINT}") from None
    except (socket.timeout, TimeoutError):
        raise EndpointError(f"{url} did not answer within {timeout_s:g} s") from None
    except (ConnectionError, OSError) as e:
        raise EndpointError(f"cannot reach {url} ({e}); {_START_HINT}") from None
    try:
        reply = json.loads(payload)
    except ValueError:
        raise EndpointError(f"{url} answered with non-JSON: {payload[:200]!r}") from None
    if not isinstance(reply, dict):
        raise EndpointError(f"{url} answered with JSON that is not an object")
    return reply
