"""Where each server's engine time went, from step logs (vllm_seed/step_log.py).

Run bench_tot.py with SEED_STEP_LOG=DIR in its environment; every SEED server
(and plain-log-b32) writes DIR/steps-<pid>.jsonl. With the bench's JSON
(--bench), each timed repetition's steps are those inside its window (the
bench records it on the system's monotonic clock, which the engines share);
without it, each log splits into runs at idle gaps longer than --gap
seconds. Each run's steps are summed by kind:

    prefill  steps that schedule prompt tokens (with or without decodes)
    plain    decode-only steps without drafts
    verify   decode-only steps that verify drafts

with the idle time inside the run (the engine waiting for requests between
its steps), the scheduler's own time (wall time minus the executor's) and
its time blocked on drafts, and its branch-steps held back for drafts by
why they waited.

    python benchmarks/step_log_report.py DIR [--bench RESULTS.json] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

KINDS = ("prefill", "plain", "verify")


def load(path: Path) -> tuple[dict, list[dict]]:
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    header = lines[0]["header"] if lines and "header" in lines[0] else {}
    return header, [s for s in lines if "header" not in s]


def kind(step: dict) -> str:
    if step["prefill"]:
        return "prefill"
    return "verify" if step["spec"] else "plain"


def split_runs(steps: list[dict], gap_s: float) -> list[list[dict]]:
    runs, run = [], []
    for step in steps:
        if run and step["start"] - run[-1]["end"] > gap_s:
            runs.append(run)
            run = []
        run.append(step)
    return runs + [run] if run else runs


def summarise(run: list[dict], window: tuple[float, float] | None = None) -> dict:
    """One run's time by kind of step (module docstring), in seconds and
    counts; its span is ``window`` if given, else its steps'."""
    start, end = window or (run[0]["start"], run[-1]["end"])
    out = {"span_s": end - start, "steps": len(run),
           "emitted": sum(s["emitted"] for s in run), "prefill_tokens": sum(s["prefill"] for s in run),
           "idle_s": (end - start) - sum(s["end"] - s["start"] for s in run),
           "blocked_s": sum(s["blocked"] for s in run),
           "scheduler_s": sum(s["end"] - s["start"] - (s["forward"] or 0.0) - s["blocked"] for s in run),
           "drafting_steps": sum(1 for s in run if s["drafting"]),
           "shut_steps": sum(1 for s in run if s["shut"]),
           "held": held_reasons(run)}
    for name in KINDS:
        steps = [s for s in run if kind(s) == name]
        out[name] = {"steps": len(steps), "forward_s": sum(s["forward"] or 0.0 for s in steps),
                     "emitted": sum(s["emitted"] for s in steps), "tokens": sum(s["tokens"] for s in steps),
                     "decoding": sum(s["decoding"] for s in steps)}
    return out


def held_reasons(run: list[dict]) -> dict[str, int]:
    """Branch-steps held back for drafts, by why (SeedScheduler._held_reasons;
    absent from older logs)."""
    total: dict[str, int] = {}
    for step in run:
        for why, n in (step.get("held") or {}).items():
            total[why] = total.get(why, 0) + n
    return dict(sorted(total.items()))


def timed_reps(logs: list[list[dict]], bench: dict):
    """Each timed repetition of the bench's JSON: its row's key (config,
    temperature and mode), the repetition, its window and its steps in order."""
    for row in bench["rows"]:
        key = f"{row['config']} T={row['temperature']:g} {row['mode']}"
        for rep in row["reps"]:
            if rep.get("monotonic_s") is None:
                continue
            start, end = rep["monotonic_s"]
            steps = sorted((s for log in logs for s in log if s["start"] >= start and s["end"] <= end),
                           key=lambda s: s["start"])
            yield key, rep, (start, end), steps


def bench_runs(logs: list[list[dict]], bench: dict) -> dict[str, list[dict]]:
    """Each timed repetition's steps, by config, temperature and mode."""
    runs: dict[str, list[dict]] = {}
    for key, rep, window, steps in timed_reps(logs, bench):
        if steps:
            runs.setdefault(key, []).append({**summarise(steps, window), "rep": rep["rep"],
                                             "tokens_per_s": rep["tokens_per_s"]})
    return runs


def label(header: dict) -> str:
    config = header.get("seed_config")
    return "plain (vLLM scheduler)" if config is None else "seed " + json.dumps(config, sort_keys=True)


def table(name: str, runs: list[dict]) -> str:
    rows = [f"{name}", "| run | span s | idle s | steps | emitted | prefill: steps, fwd s | plain: steps, fwd s, "
            "ms/step, branches/step | verify: steps, fwd s, ms/step, tokens/step, emitted/step | "
            "scheduler s | blocked s | shut steps | held back, by why |", "|" + "---|" * 12]
    for i, r in enumerate(runs):
        p, d, v = r["prefill"], r["plain"], r["verify"]
        ms = lambda k: 1000 * k["forward_s"] / max(k["steps"], 1)  # noqa: E731
        per = lambda k, f: k[f] / max(k["steps"], 1)  # noqa: E731
        rows.append(
            f"| {i} | {r['span_s']:.1f} | {r['idle_s']:.1f} | {r['steps']} | {r['emitted']} | "
            f"{p['steps']}, {p['forward_s']:.1f} | {d['steps']}, {d['forward_s']:.1f}, {ms(d):.0f}, "
            f"{per(d, 'decoding'):.1f} | {v['steps']}, {v['forward_s']:.1f}, {ms(v):.0f}, "
            f"{per(v, 'tokens'):.1f}, {per(v, 'emitted'):.1f} | {r['scheduler_s']:.2f} | {r['blocked_s']:.2f} | "
            f"{r['shut_steps']} | {', '.join(f'{k} {n}' for k, n in r['held'].items()) or '-'} |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dir", type=Path)
    parser.add_argument("--bench", type=Path, help="bench_tot.py's JSON: its timed repetitions' windows")
    parser.add_argument("--gap", type=float, default=1.0, help="idle seconds that end a run")
    parser.add_argument("--min-tokens", type=int, default=2000, help="runs emitting fewer are left out")
    parser.add_argument("--json", type=Path, help="write the summaries here too")
    args = parser.parse_args()
    report = {}
    paths = sorted(args.dir.glob("steps-*.jsonl"))
    if args.bench:
        report = bench_runs([load(p)[1] for p in paths], json.loads(args.bench.read_text()))
        for name, runs in report.items():
            print(table(name, runs), end="\n\n")
        paths = []
    for path in paths:
        header, steps = load(path)
        runs = [summarise(r) for r in split_runs(steps, args.gap)]
        runs = [r for r in runs if r["emitted"] >= args.min_tokens]
        name = f"{path.name}: {label(header)}"
        report[name] = runs
        print(table(name, runs), end="\n\n")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
