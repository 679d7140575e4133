"""What does a target step cost per token it verifies, on this machine?

The ceiling of any speculative decoding: a round that verifies T tokens per
branch (a chain of k draft tokens plus the bonus: T = k + 1) yields E <= T
tokens, so with B branches decoding it runs at most

    ceiling = E * c_B(1) / c_B(k + 1)

times plain decoding's speed, with drafting free and instant; c_B(T) is the
target step (forward, sampling and verification) carrying T tokens for each of
B branches. A speedup S needs E >= S * c_B(k + 1) / c_B(1); where that exceeds
k + 1, no draft of k tokens reaches S, however good. A token tree of N nodes
and depth d verifies N + 1 tokens and yields at most d + 1.

Measured in vLLM itself, the target alone: a ``custom_class`` proposer
(AlternateDrafts) proposes k tokens for every branch at every other step, so
steps alternate between plain decoding (1 token per branch) and verification
(k + 1), and each verify step is compared with the plain steps on either
side of it, in the same engine and batch. What a step costs does not depend on
which tokens it verifies, so the proposer repeats the last one. Timed in the
worker's model runner: the forward, sampling and verification, not the
proposer. The worker is one thread on core 0, as in the benchmark servers
(vLLM's CPU default on this 2-core machine). Greedy; random prompts of
--prompt-len tokens. One engine per k, each in its own process:

    .venv/bin/python benchmarks/step_cost.py --pair smollm2 \\
        --json benchmarks/results/step_cost_smollm2.json --markdown benchmarks/results/step_cost_smollm2.md
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _report import machine_info
from _servers import PAIRS

REPO = Path(__file__).resolve().parent.parent
SPEEDUP = 1.6  # issue 8's bar


class AlternateDrafts:
    """A vLLM ``custom_class`` proposer: k copies of each branch's last token,
    at every other step."""

    def __init__(self, vllm_config):
        self.k = vllm_config.speculative_config.num_speculative_tokens
        self.on = False

    def load_model(self, model) -> None:  # the CPU runner calls it with the target
        pass

    def propose(self, sampled_token_ids, num_tokens_no_spec, token_ids_cpu, **_):
        self.on = not self.on
        return [[tokens[-1]] * self.k if tokens and self.on else [] for tokens in sampled_token_ids]


class StepTimer:
    """Each step's scheduled tokens per branch and the target's seconds in the
    worker's model runner: execute_model (forward) + sample_tokens (sampling,
    verification), minus the proposer that sample_tokens runs."""

    def __init__(self, runner):
        self.steps: list[tuple[list[int], float]] = []
        self._tokens: list[int] = []
        self._spent = 0.0
        for name, hook in (("execute_model", self._execute), ("sample_tokens", self._sample),
                           ("propose_draft_token_ids", self._propose)):
            inner = getattr(runner, name)
            setattr(runner, name, lambda *a, _hook=hook, _inner=inner, **kw: _hook(_inner, *a, **kw))

    def _execute(self, inner, scheduler_output, *args, **kwargs):
        self._tokens = list(scheduler_output.num_scheduled_tokens.values())
        self._spent = 0.0
        return self._timed(inner, scheduler_output, *args, **kwargs)

    def _sample(self, inner, *args, **kwargs):
        out = self._timed(inner, *args, **kwargs)
        self.steps.append((self._tokens, self._spent))
        return out

    def _propose(self, inner, *args, **kwargs):
        spent = self._spent
        out = self._timed(inner, *args, **kwargs)
        self._spent = spent  # the proposer is not the target's cost
        return out

    def _timed(self, inner, *args, **kwargs):
        start = time.perf_counter()
        out = inner(*args, **kwargs)
        self._spent += time.perf_counter() - start
        return out


def paired(steps: list[tuple[list[int], float]], batch: int, k: int) -> dict:
    """Verify steps (every branch k + 1 tokens) over the mean of the plain steps
    (every branch 1 token) right before and after each."""
    def kind(tokens):
        if len(tokens) == batch and all(t == 1 for t in tokens):
            return "plain"
        return "verify" if len(tokens) == batch and all(t == k + 1 for t in tokens) else None

    kinds = [kind(tokens) for tokens, _ in steps]
    secs = [s for _, s in steps]
    ratios = [secs[i] / ((secs[i - 1] + secs[i + 1]) / 2) for i in range(1, len(steps) - 1)
              if kinds[i] == "verify" and kinds[i - 1] == kinds[i + 1] == "plain"]
    return {"plain_s": [s for s, c in zip(secs, kinds) if c == "plain"],
            "verify_s": [s for s, c in zip(secs, kinds) if c == "verify"], "ratios": ratios}


def measure(model: Path, k: int, batches: list[int], args) -> dict[int, dict]:
    import numpy as np
    from vllm import LLM, SamplingParams

    spec = {"method": "custom_class", "model": "__main__.AlternateDrafts", "num_speculative_tokens": k}
    llm = LLM(model=str(model), dtype="float32", enforce_eager=True, seed=0,
              kv_cache_memory_bytes=args.kv_cache_mib << 20, max_num_batched_tokens=16384,
              distributed_executor_backend="uni", speculative_config=spec)
    engine = llm.llm_engine
    timer = StepTimer(engine.model_executor.driver_worker.worker.model_runner)
    vocab = engine.model_config.get_vocab_size()
    params = SamplingParams(temperature=0.0, max_tokens=2048 - args.prompt_len - 16 * (k + 1), ignore_eos=True)
    out = {}
    for batch in batches:
        rng = np.random.default_rng(batch)
        req_ids = [f"b{batch}-{i}" for i in range(batch)]
        for req_id in req_ids:
            engine.add_request(req_id, {"prompt_token_ids": rng.integers(100, vocab, args.prompt_len).tolist()},
                               params)
        for _ in range(args.warmup_steps):
            engine.step()
        timer.steps.clear()
        for _ in range(args.steps):
            engine.step()
        out[batch] = paired(timer.steps, batch, k)
        engine.abort_request(req_ids)
        while engine.has_unfinished_requests():
            engine.step()
    return out


def run_child(k: int, args) -> dict[int, dict]:
    """measure() in a fresh process: vLLM's CPU kernel registry does not survive
    a third engine in one process."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "samples.json"
        subprocess.run([sys.executable, __file__, *sys.argv[1:], "--one-k", str(k), "--one-k-out", str(out)],
                       check=True)
        return {int(b): v for b, v in json.loads(out.read_text()).items()}


def acceptance_needed(e: float, k: int) -> float | None:
    """The per-token acceptance a with E(a, k) = e (adaptive.expected_tokens); None if e > k + 1."""
    from vllm_seed.adaptive import expected_tokens

    if e > k + 1:
        return None
    lo, hi = 0.0, 1.0
    for _ in range(50):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if expected_tokens(mid, k) < e else (lo, mid)
    return hi


def summarise(samples: dict[int, dict[int, dict]]) -> list[dict]:
    rows = []
    for k, by_batch in sorted(samples.items()):
        for batch, s in sorted(by_batch.items()):
            cost = statistics.median(s["ratios"])  # c_B(k + 1) / c_B(1)
            e_needed = SPEEDUP * cost
            rows.append({
                "batch": batch, "k": k, "tokens_per_branch": k + 1, "num_pairs": len(s["ratios"]),
                "plain_ms": 1000 * statistics.median(s["plain_s"]),
                "verify_ms": 1000 * statistics.median(s["verify_s"]),
                "cost_vs_plain": cost, "cost_vs_plain_min": min(s["ratios"]), "cost_vs_plain_max": max(s["ratios"]),
                "ceiling_every_token_accepted": (k + 1) / cost,
                "e_needed": e_needed, "acceptance_needed": acceptance_needed(e_needed, k),
            })
    return rows


def markdown(result: dict) -> str:
    lines = [
        f"Target step cost by tokens per branch: {result['model']} (float32, --enforce-eager, vLLM "
        f"{result['vllm']}, torch {result['torch']}), worker on 1 thread of core 0; machine: {result['machine']}. "
        f"Random {result['prompt_len']}-token prompts, greedy; each verify step against the mean of the plain "
        f"steps on either side of it, {result['steps']} alternating steps after {result['warmup_steps']} "
        f"warm-up steps, median (min-max). Command: `{result['command']}`",
        "",
        "| branches B | draft tokens k | plain step ms | verify step ms (k+1 tokens per branch) "
        "| c_B(k+1) / c_B(1), paired | ceiling: every token accepted | for 1.6x: E needed (per-token acceptance) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        need = r["acceptance_needed"]
        lines.append(
            f"| {r['batch']} | {r['k']} | {r['plain_ms']:.1f} | {r['verify_ms']:.1f} | "
            f"{r['cost_vs_plain']:.2f} ({r['cost_vs_plain_min']:.2f}-{r['cost_vs_plain_max']:.2f}) | "
            f"{r['ceiling_every_token_accepted']:.2f}x | {r['e_needed']:.2f} "
            f"({'impossible: E <= ' + str(r['k'] + 1) if need is None else f'a >= {need:.2f}'}) |")
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pair", choices=sorted(PAIRS), default="smollm2")
    p.add_argument("--ks", default="1,2,3,10", help="draft tokens per branch (10: the nodes of a (2,2,1) tree)")
    p.add_argument("--batches", default="3,12,24", help="branches per step: one ToT's thoughts to 8 ToTs'")
    p.add_argument("--prompt-len", type=int, default=320)
    p.add_argument("--warmup-steps", type=int, default=4)
    p.add_argument("--steps", type=int, default=40, help="timed engine steps per batch size, half of them verifying")
    p.add_argument("--kv-cache-mib", type=int, default=1536)  # 24 branches of ~800 tokens, unshared
    p.add_argument("--json", type=Path)
    p.add_argument("--markdown", type=Path)
    p.add_argument("--one-k", type=int, help=argparse.SUPPRESS)
    p.add_argument("--one-k-out", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args()
    ks, batches = [int(k) for k in args.ks.split(",")], [int(b) for b in args.batches.split(",")]
    if min(ks) < 1:
        p.error(f"--ks={args.ks!r}: draft tokens must be >= 1 (plain steps are measured with every k)")

    import torch

    if args.one_k is not None:  # a child: one engine, its samples to a file
        os.sched_setaffinity(0, {0})  # as the servers' worker: vLLM binds it to core 0,
        torch.set_num_threads(1)  # one thread (the executor here runs in this process)
        args.one_k_out.write_text(json.dumps(measure(PAIRS[args.pair].dir / "target", args.one_k, batches, args)))
        return
    import vllm

    samples = {k: run_child(k, args) for k in ks}
    info = machine_info()
    result = {
        "question": "target step cost by tokens per branch: the ceiling of speculative decoding",
        "command": "python " + " ".join([Path(sys.argv[0]).as_posix()] + sys.argv[1:]),
        "model": (PAIRS[args.pair].dir / "target").relative_to(REPO).as_posix(),
        "machine": f"{info['cpu']}, {info['num_cores']} cores, {info['ram_gib']} GiB RAM",
        "vllm": vllm.__version__, "torch": torch.__version__,
        "prompt_len": args.prompt_len, "warmup_steps": args.warmup_steps, "steps": args.steps,
        "rows": summarise(samples),
        "samples": {str(k): {str(b): v for b, v in by.items()} for k, by in samples.items()},
    }
    text = markdown(result)
    print(text)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    if args.markdown:
        args.markdown.write_text(text)


if __name__ == "__main__":
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # the engine core in this process
    main()
