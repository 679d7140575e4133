"""Adaptive speculation with a fake clock: drafting stops where it does not pay
and resumes when it does."""

import pytest

from vllm_seed.adaptive import _MIN_BACKOFF, AdaptiveSpeculation, expected_tokens

L = 3


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def fitted(step_s=lambda tokens: 0.005 + 0.001 * tokens, **kw):
    clock = Clock()
    ad = AdaptiveSpeculation(L, clock=clock, **kw)
    for tokens in (1, 4, 16, 64, 8, 32):  # a spread of step sizes: a + b * tokens
        ad.step_done(tokens, step_s(tokens))
    return ad, clock


def rounds(ad, clock, rid, accepted, round_s, n=3):
    for _ in range(n):
        clock.t += round_s
        ad.stepped(rid, L, accepted)


def plain_steps(ad, clock, rid, step_s, n=3):
    for _ in range(n):
        clock.t += step_s
        ad.stepped(rid)


def test_expected_tokens_counts_the_bonus_token():
    assert expected_tokens(0.0, L) == 1.0
    assert expected_tokens(1.0, L) == 4.0
    assert expected_tokens(0.5, L) == pytest.approx(1 + 0.5 + 0.25 + 0.125)


def test_step_cost_model_recovers_a_linear_step_time():
    ad, _ = fitted()
    assert ad.steps.predict(1) == pytest.approx(0.006)
    assert ad.steps.predict(100) == pytest.approx(0.105)


def test_nothing_is_decided_before_it_is_measured():
    ad = AdaptiveSpeculation(L, clock=Clock())
    assert ad.gain("a", 1) is None
    assert ad.should_draft("a", 1)


def test_high_acceptance_and_cheap_drafts_keep_drafting():
    ad, clock = fitted()
    rounds(ad, clock, "a", accepted=3, round_s=0.015)  # E ~ 3.6 tokens per 15 ms vs 6 ms plain
    assert ad.gain("a", 1) == pytest.approx(expected_tokens(ad.acceptance("a"), L) * 0.006 / 0.015)
    assert ad.gain("a", 1) > 1
    assert all(ad.should_draft("a", 1) for _ in range(20))


def test_a_measured_plain_step_beats_the_model():
    ad, clock = fitted()
    rounds(ad, clock, "a", accepted=3, round_s=0.015)
    plain_steps(ad, clock, "b", step_s=0.002)  # plain steps are cheaper than the fit says
    assert ad.plain_s == pytest.approx(0.002)
    assert ad.gain("a", 1) < 1


def test_low_acceptance_pauses_then_probes_and_backs_off():
    ad, clock = fitted()
    rounds(ad, clock, "a", accepted=0, round_s=0.015)  # 1 token per 15 ms vs 6 ms plain
    assert ad.gain("a", 1) < 1
    decisions = [ad.should_draft("a", 1) for _ in range(_MIN_BACKOFF)]
    assert decisions == [False] * _MIN_BACKOFF
    plain_steps(ad, clock, "a", step_s=0.006, n=_MIN_BACKOFF)
    assert ad.should_draft("a", 1)  # one probe round, measured from its last plain step
    rounds(ad, clock, "a", accepted=0, round_s=0.015, n=1)  # the probe does not pay either
    decisions = [ad.should_draft("a", 1) for _ in range(2 * _MIN_BACKOFF + 1)]
    assert decisions == [False] * (2 * _MIN_BACKOFF) + [True]  # backoff doubled


def test_a_probe_that_pays_resumes_drafting():
    ad, clock = fitted()
    rounds(ad, clock, "a", accepted=0, round_s=0.015)
    while not ad.should_draft("a", 1):
        pass
    rounds(ad, clock, "a", accepted=3, round_s=0.012, n=6)  # now it pays
    assert all(ad.should_draft("a", 1) for _ in range(20))
    assert ad.branches["a"].backoff == _MIN_BACKOFF


def test_new_branches_start_from_what_the_others_measured():
    ad, clock = fitted()
    rounds(ad, clock, "a", accepted=0, round_s=0.015)
    assert not ad.should_draft("a", 1)
    # A sibling arriving now does not pay for its own first rounds: it starts
    # paused, and probes after the minimum backoff.
    assert ad.gain("new", 1) < 1
    decisions = [ad.should_draft("new", 1) for _ in range(_MIN_BACKOFF + 1)]
    assert decisions == [False] * _MIN_BACKOFF + [True]


def test_a_large_batch_stops_drafting_a_small_one_keeps_it():
    """Verify steps carry B * (L + 1) tokens, plain ones B: at acceptance 0.6
    drafting pays at batch 1 and not at batch 64."""
    ad, clock = fitted()

    def round_s(batch):  # the verify step plus a 3 ms draft
        return ad.steps.predict(batch * (L + 1)) + 0.003

    for i in range(40):  # 60% of rounds fully accepted, the rest rejected at once
        accepted = 3 if i % 5 < 3 else 0
        clock.t += round_s(1)
        ad.stepped("small", L, accepted)
    for i in range(40):
        accepted = 3 if i % 5 < 3 else 0
        clock.t += round_s(64)
        ad.stepped("large", L, accepted)
    assert ad.gain("small", 1) > 1
    assert ad.gain("large", 64) < 1
    assert ad.should_draft("small", 1) and not ad.should_draft("large", 64)


def test_verify_tokens_that_slow_a_full_step_stop_drafting_even_when_the_round_pays():
    """Its own rounds (4 ms for E ~ 2 tokens) pay; but at 64 branches its 4
    verify tokens cost 4 ms of target time where a plain token costs 1.08 ms."""
    ad, clock = fitted()  # 5 ms fixed + 1 ms per token
    rounds(ad, clock, "a", accepted=1, round_s=0.004)
    e = expected_tokens(ad.acceptance("a"), L)
    assert ad.target_gain(e, 64) == pytest.approx(e * (0.001 + 0.005 / 64) / (0.004 + 0.005 / 64))
    assert ad.gain("a", 64) == pytest.approx(ad.target_gain(e, 64)) and ad.gain("a", 64) < 1
    assert not ad.should_draft("a", 64)
    assert ad.gain("a", 1) == pytest.approx(e * 0.006 / 0.009) and ad.gain("a", 1) > 1


def test_a_token_tree_pays_for_all_the_nodes_it_verifies():
    ad, clock = fitted(verify_tokens=11)  # k_config (2, 2, 1): 10 nodes and the bonus
    rounds(ad, clock, "a", accepted=3, round_s=0.004)
    e = expected_tokens(ad.acceptance("a"), L)
    assert ad.target_gain(e, 1) == pytest.approx(e * 0.006 / 0.016)


def test_disabled_always_drafts():
    ad, clock = fitted(enabled=False)
    rounds(ad, clock, "a", accepted=0, round_s=1.0)
    assert all(ad.should_draft("a", 1) for _ in range(50))
