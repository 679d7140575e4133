"""Shared pieces of the lossless tests: prompts, sampling, two-sample test."""

import json
import os
import pathlib
import signal
import subprocess
import tempfile
import warnings

REPO = pathlib.Path(__file__).resolve().parents[2]
GSM8K_TEST = REPO / "vllm_seed" / "tot" / "data" / "gsm8k" / "test.jsonl"
DIST_PROMPT = "Question: A baker makes 12 cakes a day. How many cakes does he make in a week?\nAnswer:"
DIST_TOKENS = 4


def run_script(cmd: list[str], timeout: float, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run an engine script in a session of its own, its output in a file.

    Once it has exited, whatever it left in its session is killed and named in
    a warning. In one CI run, vLLM's shutdown of a SEED engine script left a
    VLLM::Worker orphaned (not reproduced in two reruns); holding the script's
    pipes, it kept a capture_output run waiting until its timeout.
    """
    with tempfile.TemporaryFile("w+") as out:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT,
                                text=True, start_new_session=True)
        try:
            returncode = proc.wait(timeout=timeout)
        finally:
            _kill_session(proc.pid)
        out.seek(0)
        text = out.read()
    return subprocess.CompletedProcess(cmd, returncode, text, text)


def _kill_session(sid: int) -> None:
    left = [pid for pid in map(int, filter(str.isdigit, os.listdir("/proc"))) if _sid(pid) == sid]
    names = [f"{pid} {_name(pid)}" for pid in left]
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    if left:
        warnings.warn(f"{len(left)} process(es) outlived their engine script and were killed: {names}")


def _name(pid: int) -> str:
    try:
        return pathlib.Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:120]
    except OSError:
        return "?"


def _sid(pid: int) -> int | None:
    try:
        return os.getsid(pid)
    except (ProcessLookupError, PermissionError):
        return None


def gsm8k_prompts(n: int) -> list[str]:
    """n prompts of varied length: whole questions and cut-off ones."""
    with open(GSM8K_TEST) as f:
        questions = [json.loads(line)["question"] for line in f][:n]
    out = []
    for i, q in enumerate(questions):
        words = q.split()
        cut = words if i % 3 == 0 else words[: max(3, len(words) * (i % 3) // 3)]
        out.append(f"Question: {' '.join(cut)}\nAnswer:" if i % 3 == 0 else " ".join(cut))
    return out


def greedy(llm, prompts, lengths, extra=()):
    from vllm import SamplingParams

    params = [SamplingParams(temperature=0, max_tokens=n, ignore_eos=bool(i % 2)) for i, n in enumerate(lengths)]
    # Extra sampled requests share the batch: greedy rows must not notice them.
    params += [SamplingParams(temperature=1.0, max_tokens=32, seed=i) for i in range(len(extra))]
    outs = llm.generate(list(prompts) + list(extra), params, use_tqdm=False)
    return [list(o.outputs[0].token_ids) for o in outs[: len(prompts)]]


def greedy_workload(n: int = 30) -> tuple[list[str], list[int]]:
    """Prompts and output lengths of the greedy token-identity tests."""
    prompts = gsm8k_prompts(n)
    return prompts, [8 + 9 * (i % 8) for i in range(n)]


def sample_tokens(llm, temperature: float, n: int, seed0: int, tokens: int = DIST_TOKENS) -> list[list[int]]:
    from vllm import SamplingParams

    params = [
        SamplingParams(temperature=temperature, max_tokens=tokens, seed=seed0 + i, ignore_eos=True)
        for i in range(n)
    ]
    outs = llm.generate([DIST_PROMPT] * n, params, use_tqdm=False)
    return [list(o.outputs[0].token_ids) for o in outs]


def two_sample_pvalues(a: list[list[int]], b: list[list[int]], min_count: int = 10) -> list[float]:
    """Chi-square two-sample p-value per position; rare tokens share one bin."""
    from collections import Counter

    from scipy.stats import chi2_contingency

    pvalues = []
    for pos in range(len(a[0])):
        ca, cb = Counter(s[pos] for s in a), Counter(s[pos] for s in b)
        common = [t for t in set(ca) | set(cb) if ca[t] + cb[t] >= min_count]
        rows = [[ca[t] for t in common], [cb[t] for t in common]]
        rows[0].append(len(a) - sum(rows[0]))
        rows[1].append(len(b) - sum(rows[1]))
        table = [[x for x, y in zip(*rows) if x + y > 0], [y for x, y in zip(*rows) if x + y > 0]]
        pvalues.append(1.0 if len(table[0]) < 2 else float(chi2_contingency(table)[1]))
    return pvalues


def spec_counters(llm) -> dict[str, float]:
    """vllm:spec_decode_* counters of an offline engine."""
    out = {}
    for metric in llm.get_metrics():
        if metric.name.startswith("vllm:spec_decode_num_") and hasattr(metric, "value"):
            out[metric.name] = metric.value
    return out
