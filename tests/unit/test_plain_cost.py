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


def test_an_n_s_average_moves_a_tenth_per_sample():
    cost = PlainCost(min_samples=1)
    cost.add(3, 0.050, step=0)
    cost.add(3, 0.150, step=1)
    assert cost.predict(3) == pytest.approx(0.9 * 0.050 + 0.1 * 0.150)


def test_newest_sample_by_load_range():
    cost = PlainCost()
    cost.add(12, 0.1, step=5)
    cost.add(9, 0.1, step=7)
    cost.add(4, 0.1, step=6)
    assert cost.newest(load_range(12)) == 7
    assert cost.newest(load_range(5)) == 6
    assert cost.newest(load_range(2)) is None
