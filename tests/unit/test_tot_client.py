"""The OpenAI-compatible client: request bodies, both APIs, concurrency, latency and errors."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from vllm_seed.tot.client import (
    EndpointError, OpenAIClient, Request, api_root, first_model,
)
from vllm_seed.tot.fake_server import FakeOpenAIServer


def echo(prompt: str, body: dict) -> list[str]:
    return [f"{prompt} #{i}" for i in range(body["n"])]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_completions_body_and_reply():
    with FakeOpenAIServer(echo) as server, OpenAIClient(
            server.url, "m", temperature=0.7, max_tokens=12) as client:
        completion = client.complete(Request(
            "hi there", n=2, stop=("\n",), seed=5, vllm_xargs={"seed_group": "p/1/0/thought"}))
        client.complete(Request("bare"))
    assert server.requests == [
        {"model": "m", "n": 2, "temperature": 0.7, "max_tokens": 12, "prompt": "hi there",
         "stop": ["\n"], "seed": 5, "vllm_xargs": {"seed_group": "p/1/0/thought"},
         "path": "/v1/completions"},
        {"model": "m", "n": 1, "temperature": 0.7, "max_tokens": 12, "prompt": "bare",
         "path": "/v1/completions"},
    ]
    assert completion.texts == ("hi there #0", "hi there #1")
    assert completion.completion_tokens == 6


def test_ignore_eos_is_sent_only_when_asked():
    with FakeOpenAIServer(echo) as server:
        for ignore_eos in (True, False):
            with OpenAIClient(server.url, "m", ignore_eos=ignore_eos) as client:
                client.complete(Request("hi"))
    assert server.requests[0]["ignore_eos"] is True
    assert "ignore_eos" not in server.requests[1]


def test_chat_api_sends_messages_and_reads_message_content():
    with FakeOpenAIServer(echo) as server, OpenAIClient(
            server.url + "/v1/", "m", api="chat") as client:
        completion = client.complete(Request("hello", n=3))
    assert server.requests[0]["path"] == "/v1/chat/completions"
    assert server.requests[0]["messages"] == [{"role": "user", "content": "hello"}]
    assert "prompt" not in server.requests[0]
    assert completion.texts == ("hello #0", "hello #1", "hello #2")


def test_complete_all_is_concurrent_and_keeps_request_order():
    barrier = threading.Barrier(8, timeout=5)

    def reply(prompt, body):
        barrier.wait()  # all 8 must be in flight at once
        return [prompt.upper()]

    with FakeOpenAIServer(reply) as server, OpenAIClient(server.url, "m", max_workers=8) as c:
        completions = c.complete_all([Request(f"r{i}") for i in range(8)])
    assert [x.texts for x in completions] == [(f"R{i}",) for i in range(8)]


def test_latency_is_measured_per_request():
    def slow(prompt, body):
        time.sleep(0.05)
        return ["x"]

    with FakeOpenAIServer(slow) as server, OpenAIClient(server.url, "m") as client:
        latency = client.complete(Request("p")).latency_s
    assert 0.05 <= latency < 2.0


def test_first_model_and_api_root():
    with FakeOpenAIServer(echo, model="tiny-llama") as server:
        assert first_model(server.url) == "tiny-llama"
        assert first_model(server.url + "/v1") == "tiny-llama"
    assert api_root("http://h:1/") == api_root("http://h:1/v1") == "http://h:1/v1"


def test_unreachable_endpoint_names_the_url_and_the_fix():
    port = closed_port()
    with pytest.raises(EndpointError) as info:
        first_model(f"http://127.0.0.1:{port}")
    message = str(info.value)
    assert message.startswith(f"cannot reach http://127.0.0.1:{port}/v1/models (")
    assert message.endswith("is the server running? start it with `vllm serve <model>` "
                            "or pass --endpoint")


def test_http_error_names_the_url_status_and_body():
    def broken(prompt, body):
        raise RuntimeError("model exploded")

    with FakeOpenAIServer(broken) as server, OpenAIClient(server.url, "m") as client:
        with pytest.raises(EndpointError) as info:
            client.complete(Request("p"))
    assert str(info.value) == (f"{server.url}/v1/completions returned HTTP 500: "
                               '{"error": "RuntimeError: model exploded"}')


def test_unknown_api_is_a_value_error():
    with pytest.raises(ValueError, match=r"^unknown api 'rest'; valid choices: completions, chat$"):
        OpenAIClient("http://h:1", "m", api="rest")
