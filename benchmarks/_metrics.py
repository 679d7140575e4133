"""Pure maths of the benchmarks: Prometheus text, spec-decode acceptance, median and spread.

Vocabulary (vLLM's): a *draft* is one proposal of up to k *draft tokens* for one request; a
draft token is *accepted* when verification keeps it. Every verification step also emits one
target token (recovered or bonus), so the *mean acceptance length* is 1 + accepted / drafts:
the tokens one target forward yields per request, bonus token included.
"""

from __future__ import annotations

import math
import re
import statistics
from typing import Iterable, Mapping

SPEC_PREFIX = "vllm:spec_decode_"
NUM_DRAFTS = SPEC_PREFIX + "num_drafts_total"
NUM_DRAFT_TOKENS = SPEC_PREFIX + "num_draft_tokens_total"
NUM_ACCEPTED = SPEC_PREFIX + "num_accepted_tokens_total"
NUM_ACCEPTED_PER_POS = SPEC_PREFIX + "num_accepted_tokens_per_pos_total"

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_metrics(text: str) -> list[tuple[str, dict[str, str], float]]:
    """Prometheus text exposition -> [(name, labels, value)]; comments and junk are skipped."""
    samples = []
    for line in text.splitlines():
        match = _SAMPLE.match(line.strip())
        if match is None:
            continue
        name, labels, value = match.groups()
        try:
            samples.append((name, dict(_LABEL.findall(labels or "")), float(value)))
        except ValueError:
            continue
    return samples


def spec_counters(text: str) -> dict:
    """The spec-decode counters of one /metrics page, summed over engines and models.

    {"num_drafts", "num_draft_tokens", "num_accepted", "per_pos": {position: accepted}}.
    """
    totals = {NUM_DRAFTS: 0.0, NUM_DRAFT_TOKENS: 0.0, NUM_ACCEPTED: 0.0}
    per_pos: dict[int, float] = {}
    for name, labels, value in parse_metrics(text):
        if name in totals:
            totals[name] += value
        elif name == NUM_ACCEPTED_PER_POS and "position" in labels:
            pos = int(labels["position"])
            per_pos[pos] = per_pos.get(pos, 0.0) + value
    return {
        "num_drafts": totals[NUM_DRAFTS],
        "num_draft_tokens": totals[NUM_DRAFT_TOKENS],
        "num_accepted": totals[NUM_ACCEPTED],
        "per_pos": per_pos,
    }


PREFIX_CACHE = {"vllm:prefix_cache_queries_total": "queries", "vllm:prefix_cache_hits_total": "hits"}


def prefix_cache_counters(text: str) -> dict[str, float]:
    """{"queries", "hits"}: prompt tokens looked up in vLLM's prefix cache and found, summed
    over engines and models."""
    out = {"queries": 0.0, "hits": 0.0}
    for name, _, value in parse_metrics(text):
        if name in PREFIX_CACHE:
            out[PREFIX_CACHE[name]] += value
    return out


def counter_delta(before: Mapping, after: Mapping) -> dict:
    """after - before of two `spec_counters` results (positions missing before count 0)."""
    return {
        "num_drafts": after["num_drafts"] - before["num_drafts"],
        "num_draft_tokens": after["num_draft_tokens"] - before["num_draft_tokens"],
        "num_accepted": after["num_accepted"] - before["num_accepted"],
        "per_pos": {p: v - before["per_pos"].get(p, 0.0) for p, v in after["per_pos"].items()},
    }


def add_counters(deltas: Iterable[Mapping]) -> dict:
    """The sum of several counter deltas (e.g. over repetitions)."""
    total = {"num_drafts": 0.0, "num_draft_tokens": 0.0, "num_accepted": 0.0, "per_pos": {}}
    for delta in deltas:
        for key in ("num_drafts", "num_draft_tokens", "num_accepted"):
            total[key] += delta[key]
        for pos, value in delta["per_pos"].items():
            total["per_pos"][pos] = total["per_pos"].get(pos, 0.0) + value
    return total


def acceptance(delta: Mapping) -> dict:
    """Acceptance over a counter delta; all None when nothing was drafted (no SD, or idle).

    per_position[i]: fraction of drafts whose draft token i was accepted.
    """
    drafts = delta["num_drafts"]
    if drafts <= 0:
        return {"acceptance_rate": None, "per_position": None, "mean_acceptance_length": None}
    per_pos = delta["per_pos"]
    return {
        "acceptance_rate": delta["num_accepted"] / delta["num_draft_tokens"],
        "per_position": [per_pos[p] / drafts for p in sorted(per_pos)],
        "mean_acceptance_length": 1.0 + delta["num_accepted"] / drafts,
    }


def spread(values: Iterable[float]) -> dict | None:
    """{"median", "min", "max"} of the values; None when there are none."""
    values = list(values)
    if not values:
        return None
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def median_interval(values: Iterable[float], confidence: float = 0.95) -> dict | None:
    """Median of the values with a distribution-free confidence interval for it.

    The interval is [x_(j), x_(n+1-j)] of the sorted values, with the largest j whose coverage
    1 - 2 P(Binomial(n, 1/2) < j) is at least `confidence` (the sign test's interval: it
    assumes only independent values). {"median", "low", "high", "coverage", "n"}; low and high
    are None when n is too small for that confidence (n < 6 at 95%)."""
    values = sorted(values)
    n = len(values)
    if not n:
        return None
    tail, j = 0.0, 0  # tail = P(Binomial(n, 1/2) < j); j grows while j + 1 still has the coverage
    while j < n // 2 and 1 - 2 * (tail + math.comb(n, j) / 2**n) >= confidence:
        tail += math.comb(n, j) / 2**n
        j += 1
    low, high = (values[j - 1], values[n - j]) if j else (None, None)
    return {"median": statistics.median(values), "low": low, "high": high,
            "coverage": 1 - 2 * tail if j else None, "n": n}


SEED_PREFIX = "vllm_seed:"


def seed_counters(text: str) -> dict[str, float]:
    """vllm-seed's counters of one /metrics page: {name or name{label=value}: value}, without
    the `_total` suffix; empty for a server without the plugin."""
    out = {}
    for name, labels, value in parse_metrics(text):
        if name.startswith(SEED_PREFIX) and name.endswith("_total"):
            key = name[len(SEED_PREFIX):-len("_total")]
            key += "".join(f"{{{k}={v}}}" for k, v in sorted(labels.items()))
            out[key] = out.get(key, 0.0) + value
    return out


def seed_profile(delta: Mapping[str, float], wall_s: float) -> dict | None:
    """Where a SEED server's time went over a run of `wall_s` seconds (a `seed_counters` delta,
    possibly summed over runs): engine-core phases as shares of the wall time, the drafter's
    busy share, and per drafter call its drafting, transfer and delivery times."""
    if not delta or wall_s <= 0:
        return None
    phases = {k[len("engine_phase_seconds{phase="):-1]: v for k, v in delta.items()
              if k.startswith("engine_phase_seconds{")}
    phases["blocked_on_drafts"] = delta.get("blocked_wait_seconds", 0.0)
    shares = {k: v / wall_s for k, v in phases.items()}
    shares["outside_steps"] = 1.0 - sum(shares.values())
    busy = sum(v for k, v in delta.items() if k.startswith("drafter_busy_seconds"))
    calls = delta.get("draft_jobs", 0.0)
    steps = delta.get("engine_steps", 0.0)
    caught_up, dropped = delta.get("late_drafts_verified", 0.0), delta.get("late_drafts_dropped", 0.0)
    per_call = (lambda key: 1e3 * delta.get(key, 0.0) / calls) if calls else (lambda key: None)
    landed = delta.get("drafts_verified", 0.0) + delta.get("trimmed_drafts", 0.0)
    return {
        "wall_s": wall_s, "engine_steps": steps,
        "ms_per_engine_step": 1e3 * sum(phases.values()) / steps if steps else None,
        "verify_steps": delta.get("verify_steps", 0.0), "shares": shares,
        # Engine steps with speculation off: its gate shut, or a plain window (adaptive.py).
        "gate_shut_share": delta.get("gate_shut_steps", 0.0) / steps if steps else None,
        "plain_window_share": delta.get("plain_window_steps", 0.0) / steps if steps else None,
        # Branches per engine step whose draft was late: decoding meanwhile, or held back
        # (rounds.py); and the share of late drafts still verified once they landed.
        "late_per_step": delta.get("late_branch_steps", 0.0) / steps if steps else None,
        "held_per_step": delta.get("held_back_branch_steps", 0.0) / steps if steps else None,
        "late_caught_up_share": caught_up / (caught_up + dropped) if caught_up + dropped else None,
        # Landed drafts cut by confidence (adaptive.py): to nothing, and tokens cut per draft.
        "trimmed_share": delta.get("trimmed_drafts", 0.0) / landed if landed else None,
        "trimmed_per_draft": delta.get("trimmed_draft_tokens", 0.0) / landed if landed else None,
        "drafter_busy_share": busy / wall_s, "draft_calls": calls,
        "ms_per_call": {"drafting": 1e3 * busy / calls if calls else None,
                        "transfer": per_call("draft_transfer_seconds"),
                        "undelivered": per_call("draft_undelivered_seconds")},
    }
