"""`vllm serve --speculative-plugin seed` as a user runs it: completions, chat,
streaming, n > 1 and /metrics, with greedy output identical to plain vLLM."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil
import pytest

from tests.conftest import DRAFT_DIR, TARGET_DIR
from tests.e2e.sampling import gsm8k_prompts

VLLM = str(Path(sys.executable).with_name("vllm"))


def post(url, body):
    req = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=120) as r:
        return r.read().decode()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = tmp_path_factory.mktemp("serve") / "server.log"
    argv = [VLLM, "serve", str(TARGET_DIR), "--port", str(port), "--dtype", "float32",
            "--max-model-len", "1024", "--max-num-batched-tokens", "16384", "--speculative-plugin", "seed",
            "--speculative-config", json.dumps({"model": str(DRAFT_DIR), "num_speculative_tokens": 3}),
            "--seed-config", '{"num_drafters": 2}']
    env = dict(os.environ, VLLM_CPU_KVCACHE_SPACE="1")
    with open(log, "wb") as f:
        proc = subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            assert proc.poll() is None, log.read_text()[-3000:]
            try:
                urllib.request.urlopen(url + "/health", timeout=2)
                break
            except OSError:
                time.sleep(1)
        yield url, str(TARGET_DIR)
        tree = psutil.Process(proc.pid).children(recursive=True)
        assert any("raylet" in p.name() for p in tree), [p.name() for p in tree]
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(60)
        # Clean shutdown: the engine, its workers and the Ray cluster with its
        # drafter actors are all gone, none orphaned.
        _, alive = psutil.wait_procs(tree, timeout=30)
        assert not alive, [(p.pid, p.name()) for p in alive]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)


def complete(url, model, prompt, **kw):
    body = {"model": model, "prompt": prompt, "max_tokens": 48, "temperature": 0, "ignore_eos": True, **kw}
    return json.loads(post(url + "/v1/completions", body))


def test_completions_greedy_match_plain_vllm(server, plain_llm):
    from vllm import SamplingParams

    url, model = server
    prompts = gsm8k_prompts(8)
    plain = plain_llm.generate(prompts, SamplingParams(temperature=0, max_tokens=48, ignore_eos=True), use_tqdm=False)
    served = [complete(url, model, p)["choices"][0]["text"] for p in prompts]
    assert served == [o.outputs[0].text for o in plain]


def test_streaming_equals_the_whole_response(server):
    url, model = server
    prompt = gsm8k_prompts(1)[0]
    whole = complete(url, model, prompt)["choices"][0]["text"]
    raw = post(url + "/v1/completions", {"model": model, "prompt": prompt, "max_tokens": 48,
                                         "temperature": 0, "ignore_eos": True, "stream": True})
    chunks = [json.loads(line[6:]) for line in raw.splitlines() if line.startswith("data: {")]
    assert "".join(c["choices"][0]["text"] for c in chunks) == whole


def test_parallel_sampling_and_chat(server):
    url, model = server
    out = complete(url, model, gsm8k_prompts(1)[0], n=3, temperature=1.0, seed=1,
                   vllm_xargs={"seed_group": "node-1"})
    assert sorted(c["index"] for c in out["choices"]) == [0, 1, 2]
    assert all(c["finish_reason"] == "length" for c in out["choices"])
    chat = json.loads(post(url + "/v1/chat/completions", {
        "model": model, "max_tokens": 24, "temperature": 0,
        "messages": [{"role": "user", "content": "Tom has 3 apples and buys 5 more. How many?"}]}))
    assert chat["choices"][0]["message"]["role"] == "assistant"
    assert chat["usage"]["completion_tokens"] > 0


def test_metrics_show_seed_drafts_and_acceptance(server):
    url, model = server
    complete(url, model, gsm8k_prompts(2)[1])
    time.sleep(1.5)  # the engine core publishes SEED's snapshot every second
    complete(url, model, gsm8k_prompts(2)[1])
    with urllib.request.urlopen(url + "/metrics", timeout=10) as r:
        text = r.read().decode()
    values = {line.split("{")[0].split(" ")[0]: float(line.rsplit(" ", 1)[1])
              for line in text.splitlines() if line.startswith(("vllm:spec_decode_num", "vllm_seed:"))}
    assert values["vllm:spec_decode_num_draft_tokens_total"] > 0
    assert values["vllm:spec_decode_num_accepted_tokens_total"] > 0
    assert values["vllm_seed:drafts_verified_total"] > 0
    assert values["vllm_seed:verify_steps_total"] > 0


def test_bad_requests_get_a_4xx_and_the_server_keeps_serving(server):
    url, model = server
    bad = [
        {"prompt": "word " * 2000},  # longer than --max-model-len 1024
        {"prompt": "Hi", "temperature": -1},
        {"prompt": "Hi", "vllm_xargs": {"seed_group": {"not": "a scalar"}}},
    ]
    for body in bad:
        with pytest.raises(urllib.error.HTTPError) as e:
            post(url + "/v1/completions", {"model": model, "max_tokens": 8, **body})
        assert 400 <= e.value.code < 500, (body, e.value.code)
    # Any group tag vLLM accepts (a list too) is a valid group.
    assert complete(url, model, gsm8k_prompts(1)[0], vllm_xargs={"seed_group": ["a", 1]})["choices"][0]["text"]
