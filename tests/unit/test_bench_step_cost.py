"""benchmarks/step_cost.py: its proposer, the pairing of verify and plain steps, and the ceiling maths."""

import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from step_cost import AlternateDrafts, acceptance_needed, paired, summarise  # noqa: E402

from vllm_seed.adaptive import expected_tokens  # noqa: E402


def test_proposer_drafts_k_tokens_every_other_step():
    proposer = AlternateDrafts(SimpleNamespace(speculative_config=SimpleNamespace(num_speculative_tokens=3)))
    assert proposer.propose([[5], [7, 8], []], None, None) == [[5, 5, 5], [8, 8, 8], []]
    assert proposer.propose([[5], [9]], None, None) == [[], []]
    assert proposer.propose([[6]], None, None) == [[6, 6, 6]]


def test_each_verify_step_is_compared_with_its_plain_neighbours():
    steps = [([1, 1], 1.0), ([3, 3], 3.0), ([1, 1], 2.0), ([3, 3], 6.0), ([1, 1], 2.0),
             ([3, 1], 9.0),  # a partial verify step (one branch had no draft): neither kind
             ([1, 1], 4.0), ([3, 3], 5.0)]  # a verify step without a plain step after it
    s = paired(steps, batch=2, k=2)
    assert s["ratios"] == [3.0 / 1.5, 6.0 / 2.0]
    assert s["plain_s"] == [1.0, 2.0, 2.0, 4.0]
    assert s["verify_s"] == [3.0, 6.0, 5.0]
    assert paired([([1], 1.0), ([3, 3], 3.0), ([1], 1.0)], batch=2, k=2)["ratios"] == []  # a branch missing


def test_acceptance_needed_inverts_expected_tokens():
    a = acceptance_needed(2.0, 3)
    assert expected_tokens(a, 3) == pytest.approx(2.0, abs=1e-9)
    assert acceptance_needed(4.0, 3) == pytest.approx(1.0)
    assert acceptance_needed(4.01, 3) is None  # more than k + 1 tokens from a round of k


def test_ceiling_and_e_needed_come_from_the_median_ratio():
    samples = {3: {24: {"ratios": [2.0, 2.6, 3.0], "plain_s": [0.1], "verify_s": [0.26]}},
               1: {3: {"ratios": [1.0], "plain_s": [0.05], "verify_s": [0.05]}}}
    fast, slow = summarise(samples)  # by k: 1, then 3
    assert slow["cost_vs_plain"] == 2.6
    assert slow["ceiling_every_token_accepted"] == pytest.approx(4 / 2.6)
    assert slow["e_needed"] == pytest.approx(1.6 * 2.6)
    assert slow["acceptance_needed"] is None  # 4.16 tokens needed from a round of at most 4
    assert fast["acceptance_needed"] == pytest.approx(0.6)  # E(a, 1) = 1 + a = 1.6
