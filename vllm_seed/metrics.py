"""SEED stats next to vLLM's spec-decode counters.

vLLM's own ``vllm:spec_decode_*`` counters already count SEED's drafts (they
flow through ``scheduled_spec_decode_tokens``). SEED adds, as ``vllm_seed:*``:
queue wait, round size (drafts verified per target step), held-back
branch-steps, late branch-steps and what became of their drafts, blocked
wait (target idle, waiting for a draft), plain
fallbacks, per-drafter busy time, and a profile: drafter calls' transfer
and delivery time, and the engine core's wall time by phase (PHASES). The scheduler lives in the engine-core
process and ``/metrics`` is served by the API server process, so the
scheduler publishes a JSON snapshot (path in ``SEED_STATS_FILE``, set by
the first process that registers the plugin) and a collector registered in
that process reads it at scrape time. Also logged every
``VLLM_LOG_STATS_INTERVAL`` seconds by the engine core.
"""

from __future__ import annotations

import atexit
import dataclasses
import json
import logging
import os
import tempfile
import time

logger = logging.getLogger("vllm.seed")  # under vLLM's configured logger
STATS_ENV = "SEED_STATS_FILE"
PUBLISH_EVERY_S = 1.0

COUNTERS = {  # RoundStats field -> (metric name, help)
    "drafts_verified": ("vllm_seed:drafts_verified", "Drafts verified by the target."),
    "target_steps_with_drafts": ("vllm_seed:verify_steps", "Target steps that verified at least one draft."),
    "held_back_steps": ("vllm_seed:held_back_branch_steps", "Branch-steps held back waiting for a draft."),
    "late_steps": ("vllm_seed:late_branch_steps", "Branch-steps decoded plainly while the branch's draft was in flight."),
    "late_drafts_verified": ("vllm_seed:late_drafts_verified", "Drafts verified after their branch decoded meanwhile: they began with its tokens."),
    "late_drafts_dropped": ("vllm_seed:late_drafts_dropped", "Late drafts dropped: they did not begin with what their branch decoded meanwhile."),
    "trimmed_tokens": ("vllm_seed:trimmed_draft_tokens", "Draft tokens cut before verification: their confidence did not pay for their place in the step."),
    "trimmed_drafts": ("vllm_seed:trimmed_drafts", "Drafts cut to nothing by confidence: their branch decoded plainly."),
    "plain_fallbacks": ("vllm_seed:plain_fallbacks", "Draft jobs that failed or hung: one plain step each."),
    "paused_steps": ("vllm_seed:paused_branch_steps", "Branch-steps decoded plainly because drafting did not pay."),
    "gate_shut_steps": ("vllm_seed:gate_shut_steps", "Engine steps with speculation off at their load: it lost to plain decoding."),
    "plain_window_steps": ("vllm_seed:plain_window_steps", "Engine steps in which every branch decoded plainly to measure plain decoding."),
    "drafter_restarts": ("vllm_seed:drafter_restarts", "Drafters that died and came back."),
    "queue_wait_s": ("vllm_seed:queue_wait_seconds", "Time drafts waited in the verify queue."),
    "blocked_wait_s": ("vllm_seed:blocked_wait_seconds", "Time the scheduler waited with no runnable branch."),
    "draft_jobs": ("vllm_seed:draft_jobs", "Drafter calls admitted (one call drafts a batch of branches)."),
    "draft_transfer_s": ("vllm_seed:draft_transfer_seconds", "Submit to finish of drafter calls, minus drafting: Ray transfer and actor queue."),
    "draft_undelivered_s": ("vllm_seed:draft_undelivered_seconds", "Finished drafts not yet admitted (the target was mid-step)."),
    "engine_steps": ("vllm_seed:engine_steps", "Engine steps (schedule + execute + update)."),
}
PHASES = {  # RoundStats.phase_s keys, in engine-step order
    "seed_schedule": "SEED's own scheduling: admit drafts, dispatch, plan, inject",
    "vllm_schedule": "vLLM's scheduler",
    "target_verify": "executor, steps verifying drafts (target forward, sampling, verification)",
    "target_plain": "executor, steps without drafts",
    "vllm_update": "vLLM's update_from_output",
    "seed_update": "SEED after the step: adaptive bookkeeping, re-dispatch to drafters",
    "engine_loop": "between steps while requests remain: engine-core loop, output IPC",
}


class StatsPublisher:
    """Engine-core side: snapshot file for /metrics, and the periodic log."""

    def __init__(self, stats, clock=time.monotonic):
        self.stats, self.clock = stats, clock
        self.path = os.environ.get(STATS_ENV)
        self.started = self.last_publish = self.last_log = clock()
        self.log_every_s = float(os.environ.get("VLLM_LOG_STATS_INTERVAL", "10"))

    def snapshot(self) -> dict:
        return {**dataclasses.asdict(self.stats), "uptime_s": self.clock() - self.started}

    def maybe_publish(self, force: bool = False) -> None:
        """At most every PUBLISH_EVERY_S; `force` when the engine goes idle, so a scrape
        after a run reads the run's last step."""
        now = self.clock()
        if self.path and (force or now - self.last_publish >= PUBLISH_EVERY_S):
            self.last_publish = now
            tmp = f"{self.path}.{os.getpid()}.tmp"
            with open(tmp, "w") as f:
                json.dump(self.snapshot(), f)
            os.replace(tmp, self.path)
        if now - self.last_log >= self.log_every_s and self.stats.drafts_verified:
            self.last_log = now
            logger.info("SEED metrics: %s", summary_line(self.snapshot()))


def summary_line(snap: dict) -> str:
    steps = max(snap["target_steps_with_drafts"], 1)
    drafts = max(snap["drafts_verified"], 1)
    busy = ", ".join(
        f"{100 * s / max(snap['uptime_s'], 1e-9):.0f}%" for _, s in sorted(snap["drafter_busy_s"].items())
    )
    return (
        f"round size {snap['drafts_verified'] / steps:.2f} drafts/step, "
        f"queue wait {1000 * snap['queue_wait_s'] / drafts:.2f} ms/draft, "
        f"held back {snap['held_back_steps']} branch-steps, "
        f"late {snap['late_steps']} branch-steps ({snap['late_drafts_verified']} drafts caught up, "
        f"{snap['late_drafts_dropped']} dropped), "
        f"trimmed {snap['trimmed_tokens']} draft tokens ({snap['trimmed_drafts']} whole drafts), "
        f"blocked {snap['blocked_wait_s']:.2f} s, drafter busy [{busy}], "
        f"paused {snap['paused_steps']} branch-steps, gate shut {snap['gate_shut_steps']} steps, "
        f"fallbacks {snap['plain_fallbacks']}, restarts {snap['drafter_restarts']}"
    )


class SeedCollector:
    """API-server side prometheus collector over the engine core's snapshot."""

    def __init__(self, path: str):
        self.path = path

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        try:
            with open(self.path) as f:
                snap = json.load(f)
        except (OSError, ValueError):
            return
        for field, (name, help_text) in COUNTERS.items():
            yield _counter(CounterMetricFamily, name, help_text, snap[field])
        busy = CounterMetricFamily("vllm_seed:drafter_busy_seconds", "Drafter time spent drafting.", labels=["drafter"])
        for drafter, seconds in sorted(snap["drafter_busy_s"].items()):
            busy.add_metric([str(drafter)], seconds)
        yield busy
        phases = CounterMetricFamily("vllm_seed:engine_phase_seconds",
                                     "Engine-core wall time by phase of the engine step.", labels=["phase"])
        for phase in PHASES:
            phases.add_metric([phase], snap.get("phase_s", {}).get(phase, 0.0))
        yield phases
        yield GaugeMetricFamily("vllm_seed:uptime_seconds", "Seconds since the SEED scheduler started.", value=snap["uptime_s"])


def _counter(cls, name, help_text, value):
    metric = cls(name, help_text)
    metric.add_metric([], value)
    return metric


_collector_installed = False


def install_collector(fresh: bool = False) -> None:
    """In the process that serves /metrics: choose the snapshot path, serve it.

    Without ``fresh``, only where no ancestor chose one (offline ``LLM``);
    the ``vllm serve`` CLI passes ``fresh`` because its parent may be another
    process that loaded the plugin (a test, a benchmark harness).
    """
    global _collector_installed
    if _collector_installed or (os.environ.get(STATS_ENV) and not fresh):
        return
    _collector_installed = True
    fd, path = tempfile.mkstemp(prefix="vllm-seed-stats-", suffix=".json")
    os.close(fd)
    os.environ[STATS_ENV] = path
    atexit.register(_remove, path)
    try:
        from prometheus_client import REGISTRY
    except ImportError:
        return
    REGISTRY.register(SeedCollector(path))


def _remove(path: str) -> None:
    try:
        os.remove(path)
    except OSError:
        pass
