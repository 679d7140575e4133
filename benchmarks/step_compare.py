"""SEED's engine steps beside plain vLLM's at the same load, from step logs.

Run bench_tot.py with plain-log-b32 and a SEED config, SEED_STEP_LOG=DIR in
its environment (step_log_report.py's docstring); then

    python benchmarks/step_compare.py DIR --bench RESULTS.json [--json OUT]

Each timed repetition's steps (those inside its window) are pooled per
config, temperature and mode, and cut by load: the decoding branches a step
scheduled, in the gates' ranges (1, 2-3, 4-7, 8-15, 16-31, ...). Per range
and kind of step:

    plain      decode steps without drafts and no draft in flight at their end
    in flight  decode steps without drafts, a draft in flight at their end
    verify     decode steps that verify drafts
    prefill    steps that schedule prompt tokens (all loads in one row)

with the mean forward (the executor's time), the mean time outside it (wall
time since the previous step's end, less the forward and the time blocked on
drafts: both schedulers' own work, and the engine loop), the mean time
blocked on drafts, tokens emitted per step and per second of wall time. The
first step after the engine idled has no wall time: it counts in the steps,
forward and tokens per step only. A plain vLLM log has only plain and
prefill steps.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from step_log_report import load, timed_reps

from vllm_seed.gate import load_range

KINDS = ("plain", "in flight", "verify", "prefill")
ALL_LOADS = 1 << 30  # the prefill rows' load range: every load, after the others


def step_kind(step: dict) -> str:
    if step["prefill"]:
        return "prefill"
    if step["spec"]:
        return "verify"
    return "in flight" if step["drafting"] else "plain"


def range_label(load: int) -> str:
    """A gate's load range (gate.load_range) as its branches: 1, 2-3, 4-7, ..."""
    if load == ALL_LOADS:
        return "all"
    low = 1 << (load - 1)
    return "1" if low == 1 else f"{low}-{2 * low - 1}"


def pooled_steps(logs: list[list[dict]], bench: dict) -> dict[str, list[dict]]:
    """Each config's timed steps, by config, temperature and mode."""
    pooled: dict[str, list[dict]] = {}
    for key, _, _, steps in timed_reps(logs, bench):
        pooled.setdefault(key, []).extend(s for s in steps if s["decoding"] + s["prefill"])
    return pooled


def summarise(steps: list[dict]) -> dict[str, dict]:
    """{load range or "all": {kind: means}} (module docstring)."""
    groups: dict[tuple[int, str], list[dict]] = {}
    for s in steps:
        kind = step_kind(s)
        groups.setdefault((ALL_LOADS if kind == "prefill" else load_range(s["decoding"]), kind), []).append(s)
    out: dict[str, dict] = {}
    for (load, kind), group in sorted(groups.items(), key=lambda kv: kv[0][0]):
        timed = [s for s in group if s["wall"] is not None]  # a step after idle has no wall time
        n, m, wall = len(group), max(len(timed), 1), sum(s["wall"] for s in timed)
        out.setdefault(range_label(load), {})[kind] = {
            "steps": n,
            "forward_ms": 1000 * sum(s["forward"] for s in group) / n,
            "outside_ms": 1000 * sum(s["wall"] - s["forward"] - s["blocked"] for s in timed) / m,
            "blocked_ms": 1000 * sum(s["blocked"] for s in group) / n,
            "emitted_per_step": sum(s["emitted"] for s in group) / n,
            "emitted_per_s": sum(s["emitted"] for s in timed) / wall if wall > 0 else 0.0,
        }
    return out


def table(name: str, summary: dict[str, dict]) -> str:
    rows = [name, "| branches | kind | steps | forward ms | outside forward ms | blocked ms | "
                  "emitted/step | emitted/s |", "|" + "---|" * 8]
    for load_, kinds in summary.items():
        for kind in KINDS:
            if kind in kinds:
                k = kinds[kind]
                rows.append(f"| {load_} | {kind} | {k['steps']} | {k['forward_ms']:.1f} | {k['outside_ms']:.2f} | "
                            f"{k['blocked_ms']:.2f} | {k['emitted_per_step']:.1f} | {k['emitted_per_s']:.1f} |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dir", type=Path)
    parser.add_argument("--bench", type=Path, required=True, help="bench_tot.py's JSON: its repetitions' windows")
    parser.add_argument("--json", type=Path, help="write the summaries here too")
    args = parser.parse_args()
    logs = [load(p)[1] for p in sorted(args.dir.glob("steps-*.jsonl"))]
    report = {name: summarise(steps) for name, steps in
              pooled_steps(logs, json.loads(args.bench.read_text())).items()}
    for name, summary in report.items():
        print(table(name, summary), end="\n\n")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
