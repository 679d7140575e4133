"""SEED stats: engine-core snapshot -> API-server prometheus collector."""

from vllm_seed.metrics import SeedCollector, StatsPublisher, summary_line
from vllm_seed.rounds import RoundStats


def test_snapshot_reaches_the_collector(tmp_path, monkeypatch):
    path = tmp_path / "stats.json"
    monkeypatch.setenv("SEED_STATS_FILE", str(path))
    clock = iter([0.0, 2.0, 2.0, 2.0]).__next__
    stats = RoundStats(drafts_verified=6, target_steps_with_drafts=3, held_back_steps=4,
                       queue_wait_s=0.003, drafter_busy_s={0: 0.5, 1: 1.0}, draft_jobs=5,
                       draft_transfer_s=0.004, phase_s={"target_verify": 1.5, "engine_loop": 0.25})
    StatsPublisher(stats, clock=clock).maybe_publish()
    families = {f.name: f for f in SeedCollector(str(path)).collect()}
    assert families["vllm_seed:drafts_verified"].samples[0].value == 6
    assert families["vllm_seed:held_back_branch_steps"].samples[0].value == 4
    busy = {s.labels["drafter"]: s.value for s in families["vllm_seed:drafter_busy_seconds"].samples}
    assert busy == {"0": 0.5, "1": 1.0}
    assert families["vllm_seed:uptime_seconds"].samples[0].value == 2.0
    assert families["vllm_seed:draft_jobs"].samples[0].value == 5
    assert families["vllm_seed:draft_transfer_seconds"].samples[0].value == 0.004
    phases = {s.labels["phase"]: s.value for s in families["vllm_seed:engine_phase_seconds"].samples}
    assert phases == {"seed_schedule": 0.0, "vllm_schedule": 0.0, "target_verify": 1.5,
                      "target_plain": 0.0, "vllm_update": 0.0, "seed_update": 0.0,
                      "engine_loop": 0.25}


def test_collector_without_snapshot_yields_nothing(tmp_path):
    assert list(SeedCollector(str(tmp_path / "missing.json")).collect()) == []


def test_summary_line():
    snap = {"drafts_verified": 6, "target_steps_with_drafts": 3, "queue_wait_s": 0.003,
            "held_back_steps": 4, "late_steps": 5, "late_drafts_verified": 2, "late_drafts_dropped": 1,
            "trimmed_tokens": 9, "trimmed_drafts": 3, "blocked_wait_s": 0.25, "plain_fallbacks": 0, "drafter_restarts": 1,
            "paused_steps": 7, "gate_shut_steps": 12, "drafter_busy_s": {0: 0.5}, "uptime_s": 2.0}
    assert summary_line(snap) == (
        "round size 2.00 drafts/step, queue wait 0.50 ms/draft, held back 4 branch-steps, "
        "late 5 branch-steps (2 drafts caught up, 1 dropped), "
        "trimmed 9 draft tokens (3 whole drafts), blocked 0.25 s, drafter busy [25%], paused 7 branch-steps, gate shut 12 steps, "
        "fallbacks 0, restarts 1"
    )


def test_publishing_is_throttled_unless_forced(tmp_path, monkeypatch):
    import json

    path = tmp_path / "stats.json"
    monkeypatch.setenv("SEED_STATS_FILE", str(path))
    now = [0.0]
    stats = RoundStats()
    publisher = StatsPublisher(stats, clock=lambda: now[0])
    now[0] = 1.5
    publisher.maybe_publish()
    stats.engine_steps = 7
    now[0] = 1.6
    publisher.maybe_publish()  # 0.1 s later: throttled
    assert json.loads(path.read_text())["engine_steps"] == 0
    publisher.maybe_publish(force=True)  # the engine went idle: the last step is published
    assert json.loads(path.read_text())["engine_steps"] == 7
