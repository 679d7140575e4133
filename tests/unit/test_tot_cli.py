"""`python -m vllm_seed.tot` end to end against the fake server, and its bad-input errors."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from vllm_seed.tot import ToTConfig, run_tot
from vllm_seed.tot.__main__ import main
from vllm_seed.tot.fake_server import FakeOpenAIServer
from vllm_seed.tot.runner import latency_summary

REPO = Path(__file__).resolve().parents[2]
PREFIX = "python -m vllm_seed.tot: error: "


def gsm8k_reply(prompt: str, body: dict) -> list[str]:
    """Thoughts "Step k?", answer 5, value 7; the solution is right for Janet's ducks only."""
    if "Please output the next sub-question" in prompt:
        return [f"Step {i}? and more words" for i in range(body["n"])]
    if "Please answer the sub-question" in prompt:
        return ["It is 5."]
    if "Please output a number between 0 and 10" in prompt:
        return ["7"]
    return ["She makes $18." if "Janet" in prompt else "It is 1000."]


def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "vllm_seed.tot", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=60)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_cli_end_to_end_writes_the_json_result(tmp_path):
    out = tmp_path / "sub" / "result.json"
    with FakeOpenAIServer(gsm8k_reply) as server:
        proc = run_cli("--endpoint", server.url, "--task", "gsm8k", "--num-problems", "2",
                       "--concurrency", "2", "--output", str(out), "--quiet")
        groups = sorted(b["vllm_xargs"]["seed_group"] for b in server.requests)
    assert (proc.returncode, proc.stderr) == (0, "")
    assert proc.stdout.startswith("gsm8k: accuracy 0.500 (1/2), mean score 0.500 | ")
    assert proc.stdout.count("\n") == 1
    result = json.loads(out.read_text())
    # Per problem and step: 1 thought request (n=3), 3 answers, 3 values; then 1 solution.
    # Tokens (words): thoughts 3*5, answers 3*3, values 3*1 per step; solution 3.
    assert {k: result[k] for k in ("num_problems", "num_correct", "accuracy", "mean_score",
                                   "num_requests", "completion_tokens")} == {
        "num_problems": 2, "num_correct": 1, "accuracy": 0.5, "mean_score": 0.5,
        "num_requests": 30, "completion_tokens": 2 * (2 * (15 + 9 + 3) + 3)}
    assert result["config"] == {
        "endpoint": server.url, "model": "fake-model", "task": "gsm8k", "num_problems": 2,
        "start": 0, "concurrency": 2, "num_thoughts": 3, "max_steps": 2, "max_states": 1,
        "temperature": 0.2, "max_tokens": 100, "ignore_eos": False, "api": "completions",
        "thought_requests": "single", "seed": 0, "timeout_s": 600.0}
    assert result["latency_s"]["count"] == 30
    assert result["output_tokens_per_s"] == result["completion_tokens"] / result["wall_time_s"]
    first, second = result["problems"]
    assert (first["id"], first["gold"], first["answer"], first["correct"]) == (
        "gsm8k-0", "18", "18", True)
    assert (second["id"], second["answer"], second["correct"]) == ("gsm8k-1", "1000", False)
    assert first["best_state"] == {"steps": ["Step 0?##5", "Step 0?##5"], "values": [7.0, 7.0]}
    assert [len(s["candidates"]) for s in first["steps"]] == [3, 3]
    assert groups.count("gsm8k-1/1/0/answer") == 3
    assert groups.count("gsm8k-0/3/0/solution") == 1


def test_cli_chat_api_and_start(tmp_path, capsys):
    out = tmp_path / "r.json"
    with FakeOpenAIServer(gsm8k_reply, model="chat-model") as server:
        code = main(["--endpoint", server.url, "--api", "chat", "--start", "5",
                     "--num-problems", "1", "--max-steps", "1", "--output", str(out), "--quiet"])
        paths = {b["path"] for b in server.requests}
    assert code == 0
    assert paths == {"/v1/chat/completions"}
    result = json.loads(out.read_text())
    assert (result["config"]["model"], result["problems"][0]["id"]) == ("chat-model", "gsm8k-5")
    assert capsys.readouterr().out.startswith("gsm8k: accuracy 0.000 (0/1)")


@pytest.mark.parametrize("args, path", [
    (["--pair", "smollm2"], "/v1/chat/completions"),
    (["--pair", "tiny"], "/v1/completions"),
    (["--pair", "smollm2", "--api", "completions"], "/v1/completions"),
])
def test_pair_picks_the_api_unless_api_is_given(args, path, tmp_path):
    with FakeOpenAIServer(gsm8k_reply) as server:
        code = main(["--endpoint", server.url, *args, "--num-problems", "1", "--max-steps", "1",
                     "--output", str(tmp_path / "r.json"), "--quiet"])
        paths = {b["path"] for b in server.requests}
    assert (code, paths) == (0, {path})


def test_unknown_task_is_one_line_without_traceback(tmp_path):
    proc = run_cli("--task", "foo", "--output", str(tmp_path / "r.json"))
    assert proc.returncode == 2
    assert proc.stderr == (
        PREFIX + "unknown task 'foo'; valid choices: blocksworld, creative, gsm8k\n")
    assert not (tmp_path / "r.json").exists()


def test_unreachable_endpoint_is_one_line_without_traceback(tmp_path):
    port = closed_port()
    proc = run_cli("--endpoint", f"http://127.0.0.1:{port}", "--output", str(tmp_path / "r.json"))
    assert proc.returncode == 1
    assert proc.stderr.startswith(PREFIX + f"cannot reach http://127.0.0.1:{port}/v1/models (")
    assert proc.stderr.endswith("is the server running? start it with `vllm serve <model>` or "
                                "pass --endpoint\n")
    assert proc.stderr.count("\n") == 1


@pytest.mark.parametrize("flag, field", [
    ("--num-problems", "num_problems"), ("--concurrency", "concurrency"),
    ("--num-thoughts", "num_thoughts"), ("--max-steps", "max_steps"),
    ("--max-states", "max_states"), ("--max-tokens", "max_tokens"),
])
def test_numeric_options_below_one_are_rejected(flag, field, capsys, tmp_path):
    assert main([flag, "0", "--output", str(tmp_path / "r.json")]) == 2
    assert capsys.readouterr().err == PREFIX + f"{field} must be an integer >= 1, got 0\n"


@pytest.mark.parametrize("args, message", [
    (["--temperature", "-1"], "temperature must be >= 0, got -1.0"),
    (["--start", "-1"], "start must be an integer >= 0, got -1"),
    (["--api", "rest"], "unknown api 'rest'; valid choices: completions, chat"),
    (["--pair", "llama"], "unknown pair 'llama'; valid choices: tiny, smollm2"),
    (["--thought-requests", "all"], "unknown thought_requests 'all'; valid choices: single, n"),
    (["--endpoint", "localhost:8000"],
     "endpoint must start with http:// or https://, got 'localhost:8000'"),
    (["--start", "1319", "--num-problems", "1"],
     "start 1319 + num_problems 1 exceeds the 1319 gsm8k problems"),
])
def test_bad_options_are_rejected(args, message, capsys, tmp_path):
    assert main([*args, "--output", str(tmp_path / "r.json")]) == 2
    assert capsys.readouterr().err == PREFIX + message + "\n"


def test_server_error_is_reported_with_model_given(capsys, tmp_path):
    def broken(prompt, body):
        raise RuntimeError("boom")

    with FakeOpenAIServer(broken) as server:
        code = main(["--endpoint", server.url, "--model", "x", "--num-problems", "3",
                     "--concurrency", "3", "--output", str(tmp_path / "r.json"), "--quiet"])
    assert code == 1
    assert capsys.readouterr().err == (
        PREFIX + f"{server.url}/v1/completions returned HTTP 500: "
        '{"error": "RuntimeError: boom"}\n')


def test_run_tot_api_for_benchmarks():
    with FakeOpenAIServer(gsm8k_reply) as server:
        result = run_tot(ToTConfig(endpoint=server.url, num_problems=1, max_steps=1))
    assert (result["num_problems"], result["accuracy"], result["num_requests"]) == (1, 1.0, 8)


def test_latency_summary_nearest_rank():
    assert latency_summary([i / 100 for i in range(100, 0, -1)]) == {
        "count": 100, "mean": 0.505, "p50": 0.5, "p90": 0.9, "p99": 0.99, "max": 1.0}
    assert latency_summary([]) == {
        "count": 0, "mean": 0.0, "p50": 0.0, "p90": 0.0, "p99": 0.0, "max": 0.0}


def test_config_is_frozen_and_rejects_bools():
    config = ToTConfig()
    with pytest.raises(AttributeError):
        config.task = "creative"
    with pytest.raises(ValueError, match=r"^num_thoughts must be an integer >= 1, got True$"):
        ToTConfig(num_thoughts=True)


def test_ignore_eos_reaches_every_request(tmp_path):
    with FakeOpenAIServer(gsm8k_reply) as server:
        assert main(["--endpoint", server.url, "--num-problems", "1", "--max-steps", "1",
                     "--ignore-eos", "--output", str(tmp_path / "r.json"), "--quiet"]) == 0
        bodies = list(server.requests)
    assert len(bodies) == 8 and all(b["ignore_eos"] is True for b in bodies)
    assert json.loads((tmp_path / "r.json").read_text())["config"]["ignore_eos"] is True


def test_ignore_eos_must_be_a_bool():
    with pytest.raises(ValueError, match=r"^ignore_eos must be true or false, got 'yes'$"):
        ToTConfig(ignore_eos="yes")
