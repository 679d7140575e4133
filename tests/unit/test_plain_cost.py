"""PlainCost: plain decoding's step time by the number of decoding branches."""

import pytest

from vllm_seed.gate import load_range
from vllm_seed.plain_cost import PlainCost


def test_no_prediction_before_enough_samples():
    cost = PlainCost(min_samples=3)
    cost.add(12, 0.100, step=1)
    cost.add(12, 0.100, step=2)
    assert cost.predict(12) is None
    cost.add(12, 0.100, step=3)
    assert cost.predict(12) == pytest.approx(0.100)


def test_an_n_measured_predicts_itself_whatever_was_measured_elsewhere():
    cost = PlainCost(min_samples=1)
    for step in range(20):
        cost.add(12, 0.100, step)
    for step in range(4):
        cost.add(4, 0.075, step)
    assert cost.predict(4, per_token=0.003) == pytest.approx(0.075)
    assert cost.predict(12, per_token=0.003) == pytest.approx(0.100)


def test_an_n_not_measured_is_the_nearest_plus_the_per_token_cost_of_the_difference():
    """Samples at one N carry no slope: the target's per-token cost does."""
    cost = PlainCost(min_samples=1)
    cost.add(12, 0.100, step=0)
    assert cost.predict(4, per_token=0.003) == pytest.approx(0.100 - 8 * 0.003)
    cost.add(2, 0.060, step=1)
    assert cost.predict(4, per_token=0.003) == pytest.approx(0.060 + 2 * 0.003)  # 2 is nearer
    cost.add(6, 0.080, step=2)
    assert cost.predict(4, per_token=0.003) == pytest.approx(0.080 - 2 * 0.003)  # a tie: the larger N
    assert cost.predict(100, per_token=0.0) == pytest.approx(0.100)
    assert cost.predict(1, per_token=1.0) == pytest.approx(1e-6)  # never zero or below


def test_a_plain_window_s_fresh_samples_decide_an_n():
    """The case of bench_tot_plain_cost.md (one ToT, T=1, repetition 0): 3
    branches still predicted at 81 ms (older, slower samples) after a window
    measured 67-69 ms; the gate then read speculation 13% slower than plain
    as level. A moving average (a tenth per sample) would still say 76 ms."""
    cost = PlainCost(min_samples=1)
    for step in range(20):
        cost.add(3, 0.081, step)
    for step, seconds in enumerate((0.068, 0.069, 0.067, 0.067), start=100):
        cost.add(3, seconds, step)
    assert cost.predict(3) == pytest.approx(0.068, abs=0.001)


def test_slow_samples_do_not_raise_an_n_s_estimate():
    """A step runs slow when something else takes the host, never faster
    than its own work: 3 slow samples of a window's 4 (as at 1 branch in that
    run) leave it near the usual steps."""
    cost = PlainCost(min_samples=1)
    for step, seconds in enumerate((0.055, 0.054, 0.056, 0.055, 0.077, 0.069, 0.078, 0.062)):
        cost.add(1, seconds, step)
    assert cost.predict(1) == pytest.approx(0.055)


def test_only_the_newest_samples_count():
    cost = PlainCost(min_samples=1)
    for step in range(8):
        cost.add(3, 0.050, step)
    for step in range(8, 16):
        cost.add(3, 0.100, step)
    assert cost.predict(3) == pytest.approx(0.100)


def test_newest_sample_by_load_range():
    cost = PlainCost()
    cost.add(12, 0.1, step=5)
    cost.add(9, 0.1, step=7)
    cost.add(4, 0.1, step=6)
    assert cost.newest(load_range(12)) == 7
    assert cost.newest(load_range(5)) == 6
    assert cost.newest(load_range(2)) is None


def test_each_temperature_keeps_its_own_steps():
    """Sampled steps cost more than greedy ones: at 16-31 branches, greedy
    plain steps were predicted at 5.35-5.67 ms per token after sampled ones
    where they took 5.04, and the gate read level speculation as a gain of
    1.12-1.14 (bench_tot_8tots.md)."""
    cost = PlainCost(min_samples=1)
    for step in range(8):
        cost.add(24, 0.120, step, temperature=0.0)
        cost.add(24, 0.134, step, temperature=1.0)
    assert cost.predict(24, temperature=0.0) == pytest.approx(0.120)
    assert cost.predict(24, temperature=1.0) == pytest.approx(0.134)
    assert cost.predict(24, temperature=0.96) == pytest.approx(0.134)  # to 0.1, as the gates' regimes
    assert cost.predict(24, temperature=0.7) is None  # no samples: no estimate


def test_newest_sample_by_temperature():
    cost = PlainCost()
    cost.add(12, 0.1, step=5, temperature=0.0)
    cost.add(12, 0.1, step=9, temperature=1.0)
    assert cost.newest(load_range(12), temperature=0.0) == 5
    assert cost.newest(load_range(12), temperature=1.0) == 9
    assert cost.newest(load_range(12), temperature=0.5) is None
