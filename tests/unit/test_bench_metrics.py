"""benchmarks/_metrics.py: /metrics parsing, acceptance per position, median and spread."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import pytest  # noqa: E402
from _metrics import (  # noqa: E402
    acceptance, add_counters, counter_delta, parse_metrics, prefix_cache_counters, seed_counters,
    seed_profile, spec_counters, spread,
)

LABELS = 'engine="{e}",model_name="t"'


def page(drafts, tokens, accepted, per_pos, engine=0):
    labels = LABELS.format(e=engine)
    lines = [
        "# HELP vllm:spec_decode_num_drafts_total Number of spec decoding drafts.",
        "# TYPE vllm:spec_decode_num_drafts_total counter",
        f"vllm:spec_decode_num_drafts_total{{{labels}}} {drafts}",
        f"vllm:spec_decode_num_draft_tokens_total{{{labels}}} {tokens}",
        f"vllm:spec_decode_num_accepted_tokens_total{{{labels}}} {accepted}",
        f"vllm:spec_decode_num_drafts_created{{{labels}}} 1.7e9",
        f'vllm:num_requests_running{{{labels}}} 3.0',
    ]
    lines += [f'vllm:spec_decode_num_accepted_tokens_per_pos_total{{{labels},position="{p}"}} {v}'
              for p, v in enumerate(per_pos)]
    return "\n".join(lines) + "\n"


def test_parse_metrics_reads_names_labels_values_and_skips_comments():
    text = '# HELP x y\nfoo_total{a="1",b="x y"} 2.5\nbar 7\nbad line\n'
    assert parse_metrics(text) == [("foo_total", {"a": "1", "b": "x y"}, 2.5), ("bar", {}, 7.0)]


def test_spec_counters_sum_over_engines():
    text = page(10, 30, 12, [7, 4, 1], engine=0) + page(2, 6, 3, [2, 1, 0], engine=1)
    assert spec_counters(text) == {"num_drafts": 12.0, "num_draft_tokens": 36.0,
                                   "num_accepted": 15.0, "per_pos": {0: 9.0, 1: 5.0, 2: 1.0}}


def test_acceptance_from_two_snapshots():
    before = spec_counters(page(10, 30, 12, [7, 4, 1]))
    after = spec_counters(page(30, 90, 42, [23, 14, 5]))
    delta = counter_delta(before, after)
    assert delta == {"num_drafts": 20.0, "num_draft_tokens": 60.0, "num_accepted": 30.0,
                     "per_pos": {0: 16.0, 1: 10.0, 2: 4.0}}
    assert acceptance(delta) == {"acceptance_rate": 0.5, "per_position": [0.8, 0.5, 0.2],
                                 "mean_acceptance_length": 2.5}  # 1 + 30/20, bonus included


def test_prefix_cache_counters_sum_over_engines_and_skip_other_series():
    text = ('vllm:prefix_cache_queries_total{engine="0",model_name="m"} 300.0\n'
            'vllm:prefix_cache_hits_total{engine="0",model_name="m"} 128.0\n'
            'vllm:prefix_cache_queries_total{engine="1",model_name="m"} 100.0\n'
            'vllm:prefix_cache_hits_created 1.7e9\n'
            'vllm:external_prefix_cache_hits_total{engine="0"} 99.0\n')
    assert prefix_cache_counters(text) == {"queries": 400.0, "hits": 128.0}
    assert prefix_cache_counters("vllm:num_requests_running 0\n") == {"queries": 0.0, "hits": 0.0}


def test_plain_server_has_no_acceptance():
    empty = spec_counters("vllm:num_requests_running 0\n")
    assert acceptance(counter_delta(empty, empty)) == {
        "acceptance_rate": None, "per_position": None, "mean_acceptance_length": None}


def test_counters_add_over_reps():
    a = {"num_drafts": 4.0, "num_draft_tokens": 12.0, "num_accepted": 6.0,
         "per_pos": {0: 4.0, 1: 2.0}}
    b = {"num_drafts": 4.0, "num_draft_tokens": 12.0, "num_accepted": 2.0, "per_pos": {0: 2.0}}
    total = add_counters([a, b])
    assert total == {"num_drafts": 8.0, "num_draft_tokens": 24.0, "num_accepted": 8.0,
                     "per_pos": {0: 6.0, 1: 2.0}}
    assert acceptance(total)["per_position"] == [0.75, 0.25]


def test_spread_is_median_min_max():
    assert spread([3.0, 1.0, 2.0]) == {"median": 2.0, "min": 1.0, "max": 3.0}
    assert spread([4.0, 1.0]) == {"median": 2.5, "min": 1.0, "max": 4.0}
    assert spread([]) is None


SEED_PAGE = """# HELP vllm_seed:engine_steps_total Engine steps.
vllm_seed:engine_steps_total 100.0
vllm_seed:draft_jobs_total 40.0
vllm_seed:draft_transfer_seconds_total 0.04
vllm_seed:draft_undelivered_seconds_total 0.2
vllm_seed:blocked_wait_seconds_total 1.0
vllm_seed:verify_steps_total 50.0
vllm_seed:gate_shut_steps_total 20.0
vllm_seed:plain_window_steps_total 5.0
vllm_seed:late_branch_steps_total 30.0
vllm_seed:held_back_branch_steps_total 10.0
vllm_seed:late_drafts_verified_total 9.0
vllm_seed:late_drafts_dropped_total 3.0
vllm_seed:drafts_verified_total 60.0
vllm_seed:trimmed_drafts_total 20.0
vllm_seed:trimmed_draft_tokens_total 100.0
vllm_seed:drafter_busy_seconds_total{drafter="0"} 0.8
vllm_seed:drafter_busy_seconds_total{drafter="1"} 0.4
vllm_seed:engine_phase_seconds_total{phase="target_verify"} 3.0
vllm_seed:engine_phase_seconds_total{phase="seed_schedule"} 0.5
vllm_seed:engine_phase_seconds_total{phase="engine_loop"} 0.5
vllm_seed:uptime_seconds 12.0
vllm:spec_decode_num_drafts_total{engine="0"} 5.0
"""


def test_seed_counters_keep_labels_and_skip_gauges_and_vllm():
    counters = seed_counters(SEED_PAGE)
    assert counters["engine_steps"] == 100.0
    assert counters["drafter_busy_seconds{drafter=1}"] == 0.4
    assert counters["engine_phase_seconds{phase=target_verify}"] == 3.0
    assert not any(k.startswith(("uptime", "spec_decode")) for k in counters)
    assert seed_counters(page(1, 3, 1, [1])) == {}  # stock server: no SEED counters


def test_seed_profile_shares_and_per_call_times():
    p = seed_profile(seed_counters(SEED_PAGE), wall_s=10.0)
    assert p["shares"] == pytest.approx({"target_verify": 0.3, "seed_schedule": 0.05,
                                         "engine_loop": 0.05, "blocked_on_drafts": 0.1,
                                         "outside_steps": 0.5})
    assert p["ms_per_engine_step"] == pytest.approx(50.0)  # 5 s of phases over 100 steps
    assert p["drafter_busy_share"] == pytest.approx(0.12)
    assert (p["gate_shut_share"], p["plain_window_share"]) == pytest.approx((0.2, 0.05))  # of steps
    assert (p["late_per_step"], p["held_per_step"], p["late_caught_up_share"]) == pytest.approx((0.3, 0.1, 0.75))
    assert (p["trimmed_share"], p["trimmed_per_draft"]) == pytest.approx((0.25, 1.25))  # of 80 landed drafts
    assert p["ms_per_call"] == pytest.approx({"drafting": 30.0, "transfer": 1.0,
                                              "undelivered": 5.0})
    assert seed_profile({}, 10.0) is None
