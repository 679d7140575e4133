"""Does one SEED server stay correct and up under overload?

Starts one `vllm serve --speculative-plugin seed` (default SEED config, adaptive speculation
on) and, on loopback only, for a fixed time: `--tot-clients` concurrent GSM8K ToT clients
(each solves problem after problem; a node's 3 thoughts share a seed_group) plus
`--chat-clients` plain chat clients (one request after another). Then every request in flight
drains, and `vllm bench serve` runs against the same server. Pass/fail: 0 errors, 0 lost
responses (every request answered, every choice present), 0 truncated chat responses
(finish_reason length with fewer tokens than max_tokens, or no finish_reason), server RSS
flat after a warm-up (the last fifth of the samples after `--warmup` within `--max-rss-growth`
of the first fifth), and
`vllm bench serve` completing every prompt. Results: benchmarks/results/overload.{json,md}.

    python benchmarks/overload.py                   # 64 ToT + 8 chat clients for 300 s
    python benchmarks/overload.py --duration 20 --tot-clients 8 --chat-clients 2   # smoke
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from _report import machine_info
from _servers import CONFIGS, VLLM, Fleet, Server, free_port, server_argv

from vllm_seed.tot import ToTConfig
from vllm_seed.tot.bfs import BreadthFirstSearch
from vllm_seed.tot.client import OpenAIClient, _http_json
from vllm_seed.tot.registry import make_task
from vllm_seed.tot.runner import latency_summary

REPO = Path(__file__).resolve().parents[1]
CHAT_MAX_TOKENS = 48
CHAT_PROMPTS = ("Tom has 3 apples and buys 5 more. How many apples does he have?",
                "A train travels 60 km in 1.5 hours. What is its speed?",
                "Sara reads 12 pages a day. How many pages does she read in a week?")


class Log:
    """Thread-safe record of every request: kind, latency, outcome."""

    def __init__(self):
        self.lock = threading.Lock()
        self.rows: list[dict] = []

    def add(self, **row) -> None:
        with self.lock:
            self.rows.append(row)


class CountingClient(OpenAIClient):
    """The ToT client, recording each request (and any missing choice) in `log`."""

    def __init__(self, *args, log: Log, **kw):
        super().__init__(*args, **kw)
        self.log = log

    def complete(self, request):
        start = time.perf_counter()
        try:
            out = super().complete(request)
        except Exception as e:
            self.log.add(kind="tot", ok=False, error=f"{type(e).__name__}: {e}"[:300],
                         latency_s=time.perf_counter() - start)
            raise
        lost = request.n - len(out.texts)
        self.log.add(kind="tot", ok=lost == 0, error=f"{lost} choices missing" if lost else None,
                     latency_s=out.latency_s, tokens=out.completion_tokens)
        return out


def tot_client(i: int, url: str, model: str, stop: threading.Event, log: Log, errors: list) -> None:
    config = ToTConfig(endpoint=url, model=model, num_thoughts=3, max_steps=1, max_states=1,
                       temperature=0.2 if i % 2 else 0.0, max_tokens=64, thought_requests="n",
                       seed=i, timeout_s=600)
    task = make_task("gsm8k")
    client = CountingClient(url, model, temperature=config.temperature,
                            max_tokens=config.max_tokens, timeout_s=600, max_workers=3, log=log)
    problem_index = i * 50
    try:
        while not stop.is_set():
            problem = task.load_item(problem_index % 1000)
            try:
                BreadthFirstSearch(task, client, config, problem).run()
            except Exception as e:  # recorded by CountingClient; keep loading the server
                errors.append(f"tot client {i}: {type(e).__name__}: {e}"[:300])
            problem_index += 1
    finally:
        client.close()


def chat_client(i: int, url: str, model: str, stop: threading.Event, log: Log) -> None:
    n = 0
    while not stop.is_set():
        body = {"model": model, "max_tokens": CHAT_MAX_TOKENS, "temperature": 0.0,
                "messages": [{"role": "user", "content": CHAT_PROMPTS[(i + n) % len(CHAT_PROMPTS)]}]}
        start = time.perf_counter()
        try:
            reply = _http_json(url + "/v1/chat/completions", body, 600)
        except Exception as e:
            log.add(kind="chat", ok=False, error=f"{type(e).__name__}: {e}"[:300],
                    latency_s=time.perf_counter() - start)
        else:
            choice = (reply.get("choices") or [{}])[0]
            tokens = (reply.get("usage") or {}).get("completion_tokens") or 0
            reason = choice.get("finish_reason")
            truncated = reason not in ("stop", "length") or (reason == "length" and tokens < CHAT_MAX_TOKENS)
            log.add(kind="chat", ok=not truncated and tokens > 0,
                    error=f"truncated: finish_reason={reason} tokens={tokens}" if truncated else None,
                    latency_s=time.perf_counter() - start, tokens=tokens)
        n += 1


def run_load(server: Server, model: str, args) -> dict:
    log, errors, stop = Log(), [], threading.Event()
    rss: list[tuple[float, int]] = []
    threads = [threading.Thread(target=tot_client, args=(i, server.url, model, stop, log, errors))
               for i in range(args.tot_clients)]
    threads += [threading.Thread(target=chat_client, args=(i, server.url, model, stop, log))
                for i in range(args.chat_clients)]
    start = time.monotonic()
    for t in threads:
        t.start()
    by_name: dict[str, list[tuple[float, int]]] = {}
    while time.monotonic() - start < args.duration:
        time.sleep(2.0)
        server.sample_memory()
        now = round(time.monotonic() - start, 1)
        rss.append((now, server.last_rss))
        for name, total in server.last_rss_by_name.items():
            by_name.setdefault(name, []).append((now, total))
    stop.set()
    for t in threads:  # drain: every request in flight must come back
        t.join(timeout=args.drain_timeout)
    lost_threads = sum(t.is_alive() for t in threads)
    wall_s = time.monotonic() - start
    rows = log.rows
    # Memory is judged after the warm-up: the drafter's KV slots and vLLM's
    # buffers grow with the peak number of concurrent branches, once.
    steady = [(t, r) for t, r in rss if t >= args.warmup] or rss
    fifth = max(1, len(steady) // 5)
    first = statistics.median(r for _, r in steady[:fifth])
    last = statistics.median(r for _, r in steady[-fifth:])
    return {
        "wall_s": round(wall_s, 1),
        "requests": len(rows),
        "errors": sum(not r["ok"] for r in rows),
        "error_samples": sorted({r["error"] for r in rows if r["error"]})[:10] + errors[:5],
        "clients_not_drained": lost_threads,
        "output_tokens": sum(r.get("tokens", 0) for r in rows),
        "latency_s": {kind: latency_summary([r["latency_s"] for r in rows if r["kind"] == kind and r["ok"]])
                      for kind in ("tot", "chat")},
        "rss_mib_first_fifth": round(first / 2**20), "rss_mib_last_fifth": round(last / 2**20),
        "rss_growth": round(last / first - 1, 4),
        "rss_samples": [(t, round(r / 2**20)) for t, r in rss],
        "rss_mib_by_process_name": {name: [(t, round(r / 2**20)) for t, r in samples[::5]]
                                    for name, samples in by_name.items()},
    }


def run_vllm_bench_serve(server: Server, model: str, out_dir: Path, args) -> dict:
    argv = [VLLM, "bench", "serve", "--backend", "vllm", "--base-url", server.url,
            "--model", model, "--tokenizer", model, "--dataset-name", "random",
            "--random-input-len", "128", "--random-output-len", "64", "--ignore-eos",
            "--num-prompts", str(args.bench_prompts), "--max-concurrency", "16", "--seed", "0",
            "--save-result", "--result-dir", str(out_dir), "--result-filename", "overload_vllm_bench_serve.json"]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=1800)
    result = {"argv": argv[1:], "returncode": proc.returncode}
    path = out_dir / "overload_vllm_bench_serve.json"
    if proc.returncode == 0 and path.exists():
        data = json.loads(path.read_text())
        result.update({k: data.get(k) for k in ("completed", "num_prompts", "failed", "output_throughput",
                                                 "mean_ttft_ms", "mean_tpot_ms", "p99_tpot_ms")})
    else:
        result["stderr_tail"] = proc.stderr[-2000:]
    return result


def verdict(load: dict, bench: dict, args) -> dict:
    checks = {
        "no errors": load["errors"] == 0,
        "nothing lost (all clients drained)": load["clients_not_drained"] == 0,
        f"RSS growth after {args.warmup:g} s warm-up < {args.max_rss_growth:.0%}": load["rss_growth"] < args.max_rss_growth,
        "vllm bench serve completed every prompt": bench.get("completed") == args.bench_prompts,
    }
    return {"checks": checks, "passed": all(checks.values())}


def markdown(result: dict) -> str:
    load, bench, a = result["load"], result["vllm_bench_serve"], result["args"]
    lines = [f"Overload: {a['tot_clients']} ToT clients + {a['chat_clients']} chat clients for "
             f"{a['duration']} s against one SEED server ({result['machine'].get('cpu', '')}, "
             f"{result['machine'].get('num_cores', '')} cores).", "",
             "| check | result |", "|---|---|"]
    lines += [f"| {name} | {'pass' if ok else 'FAIL'} |" for name, ok in result["verdict"]["checks"].items()]
    lines += ["", "| requests | errors | output tokens | ToT p50 / p99 (s) | chat p50 / p99 (s) | RSS after warm-up, first / last fifth (MiB) |",
              "|---|---|---|---|---|---|"]
    tot, chat = load["latency_s"]["tot"], load["latency_s"]["chat"]
    lines.append(f"| {load['requests']} | {load['errors']} | {load['output_tokens']} | "
                 f"{tot.get('p50', 0):.3f} / {tot.get('p99', 0):.3f} | {chat.get('p50', 0):.3f} / {chat.get('p99', 0):.3f} | "
                 f"{load['rss_mib_first_fifth']} / {load['rss_mib_last_fifth']} |")
    lines += ["", f"`vllm bench serve` (random 128 in / 64 out, {a['bench_prompts']} prompts, concurrency 16): "
              f"completed {bench.get('completed')}, failed {bench.get('failed')}, "
              f"output {bench.get('output_throughput') or 0:.1f} tok/s, mean TPOT {bench.get('mean_tpot_ms') or 0:.1f} ms."]
    return "\n".join(lines) + "\n"


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pair-dir", type=Path, default=REPO / "benchmarks" / "models")
    p.add_argument("--config", default="seed-d2", choices=sorted(CONFIGS))
    p.add_argument("--duration", type=float, default=300.0, help="seconds of load")
    p.add_argument("--tot-clients", type=int, default=64)
    p.add_argument("--chat-clients", type=int, default=8)
    p.add_argument("--drain-timeout", type=float, default=600.0)
    p.add_argument("--bench-prompts", type=int, default=64)
    p.add_argument("--max-rss-growth", type=float, default=0.10,
                   help="allowed growth, last fifth vs first fifth of the samples after --warmup")
    p.add_argument("--warmup", type=float, default=60.0, help="seconds of load before memory is judged")
    p.add_argument("--out-dir", type=Path, default=REPO / "benchmarks" / "results")
    return p.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log_path = Path(tempfile.mkdtemp(prefix="seed-overload-")) / "server.log"
    extra = ("--enforce-eager", "--max-num-batched-tokens", "16384")
    server = Server(CONFIGS[args.config], server_argv(CONFIGS[args.config], args.pair_dir, port, extra=extra),
                    log_path, port)
    model = str(args.pair_dir / "target")
    with Fleet([server], startup_timeout_s=900) as fleet:
        fleet.wait_ready()
        if server.error:
            print(f"[overload] server failed: {server.error}", file=sys.stderr)
            return 1
        load = run_load(server, model, args)
        bench = run_vllm_bench_serve(server, model, args.out_dir, args)
    result = {"args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
              "machine": machine_info(), "server_argv": server.argv, "load": load,
              "vllm_bench_serve": bench}
    result["verdict"] = verdict(load, bench, args)
    (args.out_dir / "overload.json").write_text(json.dumps(result, indent=1))
    (args.out_dir / "overload.md").write_text(markdown(result))
    print(markdown(result))
    print(f"[overload] {'PASS' if result['verdict']['passed'] else 'FAIL'}; server log {log_path}")
    return 0 if result["verdict"]["passed"] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
