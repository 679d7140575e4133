"""run_tot: solve a range of problems, `concurrency` ToTs at a time, and summarise the run."""

from __future__ import annotations

import math
import sys
import time
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from typing import Any, Sequence

from tqdm import tqdm

from .bfs import BreadthFirstSearch
from .client import OpenAIClient, first_model
from .config import ToTConfig
from .registry import make_task


def run_tot(config: ToTConfig, progress: bool = False) -> dict[str, Any]:
    """Run the ToT BFS on `config.num_problems` problems and return the JSON-ready result.

    Raises ValueError for a problem range past the data and `EndpointError` when the server
    cannot be reached or answers with an error.
    """
    task = make_task(config.task)
    problems = task.load(config.start, config.num_problems)
    model = config.model or first_model(config.endpoint, config.timeout_s)
    client = OpenAIClient(
        config.endpoint, model, api=config.api, temperature=config.temperature,
        max_tokens=config.max_tokens, ignore_eos=config.ignore_eos, timeout_s=config.timeout_s,
        max_workers=config.max_requests_in_flight,
    )
    pool = ThreadPoolExecutor(max_workers=config.concurrency, thread_name_prefix="tot")
    bar = tqdm(total=len(problems), desc=config.task, unit="problem", file=sys.stderr,
               disable=not progress)
    start = time.perf_counter()
    try:
        pending = {pool.submit(BreadthFirstSearch(task, client, config, p).run)
                   for p in problems}
        records = []
        while pending:
            done, pending = wait(pending, return_when=FIRST_EXCEPTION)
            records += [f.result() for f in done]  # re-raises the first failure
            bar.update(len(done))
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
        client.close()
        bar.close()
    wall_time_s = time.perf_counter() - start
    records.sort(key=lambda r: r["index"])
    return summarise(config, model, records, wall_time_s)


def summarise(config: ToTConfig, model: str, records: Sequence[dict], wall_time_s: float) -> dict:
    """The result document: config, totals, latency summary and the per-problem records."""
    num_correct = sum(r["correct"] for r in records)
    tokens = sum(r["completion_tokens"] for r in records)
    latencies = [x for r in records for x in r["latencies_s"]]
    return {
        "config": {**config.to_dict(), "model": model},
        "num_problems": len(records),
        "num_correct": num_correct,
        "accuracy": num_correct / len(records) if records else 0.0,
        "mean_score": sum(r["score"] for r in records) / len(records) if records else 0.0,
        "completion_tokens": tokens,
        "wall_time_s": wall_time_s,
        "output_tokens_per_s": tokens / wall_time_s if wall_time_s > 0 else 0.0,
        "num_requests": len(latencies),
        "latency_s": latency_summary(latencies),
        "problems": list(records),
    }


def latency_summary(latencies: Sequence[float]) -> dict[str, float]:
    """count, mean, p50, p90, p99 (nearest rank) and max of request latencies in seconds."""
    if not latencies:
        return {"count": 0, "mean": 0.0, "p50": 0.0, "p90": 0.0, "p99": 0.0, "max": 0.0}
    ordered = sorted(latencies)

    def rank(q: float) -> float:
        return ordered[max(0, math.ceil(len(ordered) * q / 100) - 1)]

    return {
        "count": len(ordered),
        "mean": sum(ordered) / len(ordered),
        "p50": rank(50), "p90": rank(90), "p99": rank(99),
        "max": ordered[-1],
    }


def summary_line(result: dict) -> str:
    """One human line: accuracy, tokens, throughput, requests and median latency."""
    return (
        f"{result['config']['task']}: accuracy {result['accuracy']:.3f} "
        f"({result['num_correct']}/{result['num_problems']}), mean score "
        f"{result['mean_score']:.3f} | {result['completion_tokens']} output tokens in "
        f"{result['wall_time_s']:.2f} s = {result['output_tokens_per_s']:.1f} tok/s | "
        f"{result['num_requests']} requests, p50 latency {result['latency_s']['p50']:.3f} s"
    )
