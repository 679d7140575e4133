"""Adaptive speculation with a fake clock: drafting stops where it does not pay
and resumes when it does."""

import random

import pytest

from vllm_seed.adaptive import (
    _CLEAN_REFRESH,
    _CLEAN_SAMPLES,
    _CLEAN_WINDOW,
    _MIN_BACKOFF,
    _PAUSE_BELOW,
    _RANGE_REFRESH,
    AdaptiveSpeculation,
    ConfidenceModel,
    expected_tokens,
)
import vllm_seed.gate as gate_module
from vllm_seed.gate import GATE_MIN_OFF, GATE_STEPS

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


def rounds(ad, clock, rid, accepted, round_s, n=3, batch=1):
    for _ in range(n):
        clock.t += round_s
        ad.stepped(rid, batch, L, accepted)


def plain_steps(ad, clock, rid, step_s, n=3, batch=1):
    for _ in range(n):
        clock.t += step_s
        ad.stepped(rid, batch)


def test_expected_tokens_counts_the_bonus_token():
    assert expected_tokens(0.0, L) == 1.0
    assert expected_tokens(1.0, L) == 4.0
    assert expected_tokens(0.5, L) == pytest.approx(1 + 0.5 + 0.25 + 0.125)


def test_step_cost_model_recovers_a_linear_step_time():
    ad, _ = fitted()
    assert ad.steps.predict(1) == pytest.approx(0.006)
    assert ad.steps.predict(100) == pytest.approx(0.105)


def test_a_fit_with_a_negative_fixed_cost_goes_through_the_origin():
    ad, _ = fitted(step_s=lambda tokens: 0.001 * tokens - 0.002 if tokens > 10 else 0.0005 * tokens)
    fixed, per_token = ad.steps.fit()
    assert fixed == 0.0 and 0.0005 < per_token < 0.001
    assert ad.steps.predict(1) == pytest.approx(per_token)


def test_nothing_is_decided_before_it_is_measured():
    ad = AdaptiveSpeculation(L, clock=Clock())
    assert ad.gain("a", 1) is None
    assert ad.should_draft("a", 1)


def test_late_drafts_that_seldom_agree_with_the_tokens_decoded_meanwhile_pause_their_branch():
    ad, clock = fitted()
    rounds(ad, clock, "a", accepted=2, round_s=0.010)  # its verified rounds pay
    rounds(ad, clock, "b", accepted=2, round_s=0.010)
    assert ad.gain("b", 1) > 1
    ad.late_draft("a", 1)  # agreed: its first token counts as accepted
    assert ad.acceptance("a") > ad.acceptance("b")
    for _ in range(20):  # the late drafts of b do not agree: each is a rejection
        ad.late_draft("b", 0)
    assert ad.gain("b", 1) < _PAUSE_BELOW
    assert not ad.should_draft("b", 1)


def test_a_branch_whose_drafts_are_cut_to_nothing_pauses():
    """Each cut draft cost a drafter call and a step held back for it, and
    yielded only the plain token its branch decoded instead: a round whose
    first token was rejected. Counted as no round at all, the branch drafted
    again every step on the estimate of its earlier verified rounds."""
    ad, clock = fitted()
    rounds(ad, clock, "a", accepted=2, round_s=0.010)  # its verified rounds pay
    assert ad.should_draft("a", 1)
    for _ in range(6):
        ad.cut("a")
        clock.t += 0.012  # held back a step for its draft, then a plain step
        ad.stepped("a", 1)
    b = ad.branches["a"]
    assert (b.accepted, b.rejected) == (6, 3 + 6)
    assert b.round_s == pytest.approx(0.010 * 0.8**6 + 0.012 * (1 - 0.8**6))
    assert ad.gain("a", 1) < _PAUSE_BELOW
    assert not ad.should_draft("a", 1)
    clock.t += 0.006
    ad.stepped("a", 1)  # a plain step after the cut one is not a round
    assert (b.accepted, b.rejected) == (6, 9)


def test_high_acceptance_and_cheap_drafts_keep_drafting():
    ad, clock = fitted()
    rounds(ad, clock, "a", accepted=3, round_s=0.015)  # E ~ 3.6 tokens per 15 ms vs 6 ms plain
    assert ad.gain("a", 1) == pytest.approx(expected_tokens(ad.acceptance("a"), L) * 0.006 / 0.015)
    assert ad.gain("a", 1) > 1
    assert all(ad.should_draft("a", 1) for _ in range(20))


def test_measured_plain_decoding_beats_the_model():
    ad, clock = fitted()
    rounds(ad, clock, "a", accepted=3, round_s=0.015)
    for _ in range(_CLEAN_SAMPLES):  # plain decoding alone is cheaper than the forward fit says
        ad.plain_step(1, 0.002)
    assert ad.plain.predict(1) == pytest.approx(0.002)
    assert ad.gain("a", 1) < 1


def test_a_plain_step_slowed_by_something_else_counts_as_twice_the_prediction():
    ad, _ = fitted()
    for _ in range(_CLEAN_SAMPLES):
        ad.plain_step(1, 0.010)
    ad.plain_step(1, 0.500)  # the host was busy
    assert ad.plain.predict(1) < 0.013


def test_plain_steps_while_others_draft_are_not_the_baseline():
    """A paused branch's plain steps, slowed by drafting elsewhere, must not
    make drafting look better: only plain_step() feeds the baseline."""
    ad, clock = fitted()
    for _ in range(_CLEAN_SAMPLES):
        ad.plain_step(1, 0.006)
    rounds(ad, clock, "a", accepted=3, round_s=0.030)  # E ~ 3.6 tokens per 30 ms
    plain_steps(ad, clock, "b", step_s=0.012)  # contended: twice plain decoding alone
    assert ad.gain("a", 1) == pytest.approx(expected_tokens(ad.acceptance("a"), L) * 0.006 / 0.030)
    assert ad.gain("a", 1) < 1


def ticks_to_window(ad):
    ticks = 0
    while not ad.window:
        ad.tick()
        ticks += 1
    return ticks


def test_a_plain_window_measures_plain_decoding_when_speculation_never_pauses():
    ad, _ = fitted()
    assert ticks_to_window(ad) == GATE_STEPS  # the first one early: the gate needs it
    assert ad.window == _CLEAN_WINDOW
    assert not ad.should_draft("a", 1) and not ad.should_draft("b", 1)
    for _ in range(_CLEAN_SAMPLES):
        ad.plain_step(1, 0.004)
        ad.tick()
    assert ad.window == 0 and ad.should_draft("a", 1)
    assert ad.plain.predict(1) == pytest.approx(0.004)
    assert ticks_to_window(ad) == _CLEAN_REFRESH - 1  # then _CLEAN_REFRESH steps after the last sample


def test_a_plain_window_ends_without_samples_after_its_length():
    ad, _ = fitted()
    ticks_to_window(ad)
    for _ in range(_CLEAN_WINDOW):
        assert not ad.should_draft("a", 1)
        ad.tick()
    assert ad.window == 0 and ad.should_draft("a", 1)
    assert ticks_to_window(ad) == _CLEAN_REFRESH - _CLEAN_WINDOW  # counted from its start


def test_plain_decoding_measured_as_it_happens_needs_no_window():
    ad, _ = fitted()
    for _ in range(3 * _CLEAN_REFRESH):
        ad.plain_step(1, 0.004)
        ad.tick()
    assert ad.window == 0


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


def test_new_branches_pause_as_long_as_a_vain_probe_at_their_load_while_that_lasts():
    """Under load each reply would otherwise climb the backoff from the minimum,
    a probe (a step held back for its draft) per doubling."""
    ad, clock = fitted()
    rounds(ad, clock, "a", accepted=0, round_s=0.015)
    while not ad.should_draft("a", 1):  # paused the minimum backoff, then probes
        pass
    rounds(ad, clock, "a", accepted=0, round_s=0.015, n=1)  # in vain: "a" pauses 2 x minimum
    assert not ad.should_draft("a", 1)
    decisions = [ad.should_draft("new", 1) for _ in range(2 * _MIN_BACKOFF + 1)]
    assert decisions == [False] * (2 * _MIN_BACKOFF) + [True]  # so does a new branch
    assert ad.should_draft("new", 2) is True  # another load range has learned nothing
    ad.step += 2 * _MIN_BACKOFF  # that pause is over: back to the minimum, probes go on
    decisions = [ad.should_draft("later", 1) for _ in range(_MIN_BACKOFF + 1)]
    assert decisions == [False] * _MIN_BACKOFF + [True]


def test_a_probe_that_pays_lets_new_branches_probe_soon_again():
    ad, clock = fitted()
    rounds(ad, clock, "a", accepted=0, round_s=0.015)
    while not ad.should_draft("a", 1):
        pass
    rounds(ad, clock, "a", accepted=0, round_s=0.015, n=1)
    assert not ad.should_draft("a", 1)
    while not ad.should_draft("a", 1):
        pass
    rounds(ad, clock, "a", accepted=3, round_s=0.006, n=6)  # now it pays
    assert ad.should_draft("a", 1)
    rounds(ad, clock, "b", accepted=0, round_s=0.03, n=10)  # everyone's rounds pay no more
    decisions = [ad.should_draft("new", 1) for _ in range(_MIN_BACKOFF + 1)]
    assert decisions == [False] * _MIN_BACKOFF + [True]  # not 2 x minimum: "a" paid since


def test_rounds_judge_only_the_load_they_were_measured_at():
    """Rounds at 3 branches (the drafter drafts for all three, the verify step
    carries 12 tokens) say nothing about one branch alone: there a branch
    drafts and measures, its own and a newcomer's."""
    ad, clock = fitted()
    rounds(ad, clock, "a", accepted=0, round_s=0.015, batch=3)  # 1 token per 15 ms vs 8 ms plain
    assert ad.gain("a", 3) < _PAUSE_BELOW and ad.gain("new", 2) < _PAUSE_BELOW  # 2-3: one range
    assert ad.gain("a", 1) is None and ad.gain("new", 1) is None
    assert ad.should_draft("a", 1) and ad.should_draft("new", 1)
    rounds(ad, clock, "a", accepted=3, round_s=0.010, n=1)  # alone: E ~ 2.8 tokens per 10 ms
    assert ad.branches["a"].round_s == pytest.approx(0.010)  # not averaged with the rounds at 3
    assert ad.gain("new", 1) > 1


def test_a_gain_just_below_1_keeps_drafting():
    """Near 1 the estimate is noise and a wrong pause costs plain steps: a
    branch pauses only below the dead band."""
    ad, clock = fitted()  # plain step at 1 branch: 6 ms
    rounds(ad, clock, "a", accepted=1, round_s=0.006, n=20)
    e = expected_tokens(ad.acceptance("a"), L)
    rounds(ad, clock, "a", accepted=1, round_s=e * 0.006 / 0.95, n=20)  # gain 0.95
    assert ad.gain("a", 1) == pytest.approx(0.95, rel=0.01)
    assert all(ad.should_draft("a", 1) for _ in range(10))
    rounds(ad, clock, "a", accepted=1, round_s=e * 0.006 / 0.85, n=20)  # gain 0.85
    assert not ad.should_draft("a", 1)


def test_a_large_batch_stops_drafting_a_small_one_keeps_it():
    """Verify steps carry B * (L + 1) tokens, plain ones B: at acceptance 0.6
    drafting pays at batch 1 and not at batch 64."""
    ad, clock = fitted()

    def round_s(batch):  # the verify step plus a 3 ms draft
        return ad.steps.predict(batch * (L + 1)) + 0.003

    for i in range(40):  # 60% of rounds fully accepted, the rest rejected at once
        accepted = 3 if i % 5 < 3 else 0
        clock.t += round_s(1)
        ad.stepped("small", 1, L, accepted)
    for i in range(40):
        accepted = 3 if i % 5 < 3 else 0
        clock.t += round_s(64)
        ad.stepped("large", 64, L, accepted)
    assert ad.gain("small", 1) > 1
    assert ad.gain("large", 64) < 1
    assert ad.should_draft("small", 1) and not ad.should_draft("large", 64)


def test_verify_tokens_that_slow_a_full_step_stop_drafting_even_when_the_round_pays():
    """Its own rounds (4 ms for E ~ 2 tokens) pay; but at 64 branches its 4
    verify tokens cost 4 ms of target time where a plain token costs 1.08 ms."""
    ad, clock = fitted()  # 5 ms fixed + 1 ms per token
    rounds(ad, clock, "a", accepted=1, round_s=0.004, batch=64)
    e = expected_tokens(ad.acceptance("a"), L)
    assert ad.target_gain(e, 64, ad.verify_tokens(L)) == pytest.approx(e * (0.001 + 0.005 / 64) / (0.004 + 0.005 / 64))
    assert ad.gain("a", 64) == pytest.approx(ad.target_gain(e, 64, L + 1)) and ad.gain("a", 64) < 1
    assert not ad.should_draft("a", 64)
    rounds(ad, clock, "b", accepted=1, round_s=0.004)
    e = expected_tokens(ad.acceptance("b"), L)
    assert ad.gain("b", 1) == pytest.approx(e * 0.006 / 0.009) and ad.gain("b", 1) > 1


def test_a_token_tree_pays_for_all_the_nodes_it_verifies():
    ad, clock = fitted(verify_tokens=11)  # k_config (2, 2, 1): 10 nodes and the bonus
    rounds(ad, clock, "a", accepted=3, round_s=0.004)
    e = expected_tokens(ad.acceptance("a"), L)
    assert ad.verify_tokens(L) == 11
    assert ad.target_gain(e, 1, 11) == pytest.approx(e * 0.006 / 0.016)


def speculate(ad, steps, emitted, seconds, num_decoding=4):
    for _ in range(steps):  # as the scheduler calls them
        ad.tick(num_decoding)
        ad.speculative_step(num_decoding, emitted, seconds)


def gated(plain_s=0.010, num_decoding=4):
    ad, clock = fitted()
    for _ in range(_CLEAN_SAMPLES):
        ad.plain_step(num_decoding, plain_s)
    return ad, clock


def test_the_gate_turns_speculation_off_everywhere_while_it_loses_to_plain_decoding():
    """4 branches decode 4 tokens per 10 ms plainly. Speculating, a step emits
    4 tokens in 20 ms: every branch pauses, whatever its own estimate."""
    ad, clock = gated()
    rounds(ad, clock, "a", accepted=3, round_s=0.004)  # its own rounds look great
    speculate(ad, GATE_STEPS, emitted=4, seconds=0.020)
    gate = ad.gate(4)
    assert gate.gain() == pytest.approx(0.5)
    assert gate.shut == GATE_MIN_OFF
    assert not ad.should_draft("a", 4) and not ad.should_draft("b", 5)
    assert ad.should_draft("c", 2)  # another load: its own gate
    for _ in range(GATE_MIN_OFF):
        ad.tick(4)
    assert gate.shut == 0 and gate.steps == 0 and ad.should_draft("a", 4)
    speculate(ad, GATE_STEPS, emitted=4, seconds=0.020)  # still losing: off for longer
    assert gate.shut == 2 * GATE_MIN_OFF


def test_a_shut_gate_counts_only_its_own_regime_s_steps():
    """A ToT's levels alternate loads: steps at 16 branches, or with nothing
    decoding, or at 4 branches sampled, leave the shut 4-branch greedy gate
    shut; its own steps reopen it."""
    ad, _ = gated()
    speculate(ad, GATE_STEPS, emitted=4, seconds=0.020)
    gate = ad.gate(4)
    assert gate.shut == GATE_MIN_OFF
    for _ in range(3 * GATE_MIN_OFF):
        ad.tick(16)
        ad.tick(0)
    ad.temperature = 1.0
    for _ in range(GATE_MIN_OFF):
        ad.tick(4)
    ad.temperature = 0.0
    assert gate.shut == GATE_MIN_OFF and not ad.should_draft("a", 4)
    for _ in range(GATE_MIN_OFF):
        ad.tick(5)  # the same load range
    assert gate.shut == 0 and ad.should_draft("a", 4)


def test_a_gate_shut_for_sampled_steps_leaves_greedy_ones_at_the_same_load_speculating():
    """Sampled tokens are accepted less: a gate that shuts on T=1 steps says
    nothing about T=0 ones at the same load, nor does the pause it taught
    new branches."""
    ad, _ = gated()
    ad.temperature = 1.0
    for _ in range(_CLEAN_SAMPLES):
        ad.plain_step(4, 0.010)  # each temperature's plain steps are its own baseline
    speculate(ad, GATE_STEPS, emitted=4, seconds=0.020)  # losing at T=1
    assert ad.gate(4).shut == GATE_MIN_OFF and not ad.should_draft("a", 4)
    ad.temperature = 0.0
    assert ad.gate(4).shut == 0 and ad.should_draft("b", 4)
    ad.temperature = 1.04  # to 0.1: the T=1 regime
    assert not ad.should_draft("b", 4)


def test_new_branches_inherit_pauses_only_from_their_own_temperature():
    ad, clock = fitted()
    ad.temperature = 1.0
    rounds(ad, clock, "a", accepted=0, round_s=0.015)
    while not ad.should_draft("a", 1):
        pass
    rounds(ad, clock, "a", accepted=0, round_s=0.015, n=1)  # a vain probe: "a" pauses 2 x minimum
    assert not ad.should_draft("a", 1)
    ad.temperature = 0.0  # a greedy newcomer pauses the minimum (everyone's rounds lose), not 2 x
    decisions = [ad.should_draft("greedy", 1) for _ in range(_MIN_BACKOFF + 1)]
    assert decisions == [False] * _MIN_BACKOFF + [True]
    ad.temperature = 1.0
    decisions = [ad.should_draft("sampled", 1) for _ in range(2 * _MIN_BACKOFF + 1)]
    assert decisions == [False] * (2 * _MIN_BACKOFF) + [True]


def test_the_gate_stays_open_while_speculation_wins():
    ad, _ = gated()
    speculate(ad, 4 * GATE_STEPS, emitted=10, seconds=0.020)  # 10 tokens per 20 ms vs 8
    assert ad.gate(4).gain() == pytest.approx(1.25)
    assert ad.gate(4).shut == 0 and ad.should_draft("a", 4)


def shut_share(p_hit, num_steps=3000, seeds=range(5)):
    """Steps of 4 branches in 20 ms, each emitting 14 tokens (a hit,
    probability ``p_hit``) or 4 (no draft accepted), against plain decoding
    at 2.5 ms a token (gain 0.2 + 2.5 p_hit): the share of steps with the
    gate shut."""
    shut = 0
    for seed in seeds:
        ad, _ = gated()
        gate, rng = ad.gate(4), random.Random(seed)
        for _ in range(num_steps):
            ad.tick(4)
            ad.speculative_step(4, 14 if rng.random() < p_hit else 4, 0.020)
            shut += gate.shut > 0
    return shut / (num_steps * len(seeds))


def test_the_gate_stays_open_while_noisy_speculation_wins(monkeypatch):
    """Gain 1.1, judged at every step: the window's gain dips below 1 now and
    then, but not beyond the noise. The gain alone would shut it often."""
    assert shut_share(p_hit=0.48) < 0.06
    monkeypatch.setattr(gate_module, "GATE_Z", 0.0)  # the gain alone decides
    assert shut_share(p_hit=0.48) > 0.3


def test_the_gate_shuts_when_noisy_speculation_loses():
    """Gain 0.88 and 0.8 with the same noise: shut most of the time (the
    judging windows between shuttings are the rest)."""
    assert shut_share(p_hit=0.272) > 0.75
    assert shut_share(p_hit=0.24) > 0.85


def test_the_gate_compares_at_the_batch_it_measured():
    """Plain steps cost 10 ms at 4 branches and 20 ms at 16: speculation that
    emits 16 tokens per 18 ms at 16 branches wins."""
    ad, _ = gated()
    for _ in range(_CLEAN_SAMPLES):
        ad.plain_step(16, 0.020)
    speculate(ad, GATE_STEPS, emitted=16, seconds=0.018, num_decoding=16)
    assert ad.gate(16).gain() == pytest.approx(0.020 / 0.018, rel=0.05)
    assert ad.gate(16).shut == 0


def test_a_load_range_without_plain_steps_of_its_own_is_measured_before_it_is_judged():
    """A ToT's last phase runs 4 branches after three of 12: plain steps
    measured at 12 do not say what plain decoding costs at 4."""
    ad, _ = gated()  # plain steps measured at 4 branches
    ad.load(4)
    assert ad.window == 0
    ad.load(12)  # no plain step measured at 8-15 branches: a plain window opens
    assert ad.window == _CLEAN_WINDOW and not ad.should_draft("a", 12)
    for _ in range(_CLEAN_SAMPLES):
        ad.tick()
        ad.plain_step(12, 0.100)
    ad.tick()
    assert ad.window == 0
    ad.load(12)
    assert ad.window == 0 and ad.should_draft("a", 12)
    for _ in range(_RANGE_REFRESH + 1):  # 4 branches were last measured this long ago
        ad.tick()
    ad.window = 0
    ad.load(4)
    assert ad.window == _CLEAN_WINDOW


def test_the_gate_judges_a_load_against_plain_steps_at_that_load():
    """Plain steps measured at 11-12 branches only, noisy (100-105 ms); then
    the last phase runs 4 branches, where plain steps take 75 ms and
    speculation emits 4.5 tokens per 95 ms: it loses (0.89), though it beats
    the 12-branch level (1.18). A line fitted to the 11-12 samples has a
    slope of noise (here below 0, so flat) and judged it a gain; the load
    range is measured first now, and judged against its own plain steps."""
    ad, _ = fitted()
    for i in range(100):
        ad.plain_step(11 + i % 2, 0.105 if i % 2 == 0 else 0.100)
    ad.load(4)
    assert ad.window  # 4-7 branches: not measured
    for _ in range(_CLEAN_SAMPLES):
        ad.tick()
        ad.plain_step(4, 0.075)
    ad.tick()
    assert ad.window == 0
    for i in range(GATE_STEPS):
        ad.speculative_step(4, 4 + i % 2, 0.095)
    assert ad.gate(4).gain() == pytest.approx(4.5 * 0.075 / 4 / 0.095, rel=0.02)
    assert ad.gate(4).shut > 0


def test_the_gate_judges_against_a_plain_window_s_fresh_steps_not_older_slower_ones():
    """One ToT at T=1 (bench_tot_plain_cost.md, repetition 0): 3-branch
    plain steps had run at 88 ms before; a plain window measured 67-69 ms;
    speculation then emitted a token every 78 ms per branch. A moving average
    still said 81 ms and the gate read a gain near 1.03, open for 162 verify
    steps; the window's own steps say 0.87, and it shuts."""
    ad, _ = fitted()
    for _ in range(40):
        ad.plain_step(3, 0.088)
    for seconds in (0.068, 0.069, 0.067, 0.067):
        ad.plain_step(3, seconds)
    for i in range(GATE_STEPS):
        ad.speculative_step(3, 3 + 2 * (i % 2), 0.104)
    assert ad.gate(3).gain() == pytest.approx(4 * 0.068 / 3 / 0.104, rel=0.02)
    assert ad.gate(3).shut > 0


def test_a_temperature_is_measured_and_judged_against_its_own_plain_steps():
    """Greedy plain steps after sampled ones: a greedy step at a load range
    measured only at T=1 opens a plain window, and greedy speculation is
    judged against the greedy steps (bench_tot_8tots.md: at 16-31 branches,
    5.04 ms per token greedy, predicted at 5.35-5.67 after sampled steps)."""
    ad, _ = fitted()
    ad.temperature = 1.0
    for _ in range(8):
        ad.plain_step(24, 0.134)
    ad.temperature = 0.0
    ad.load(24)
    assert ad.window
    for _ in range(_CLEAN_SAMPLES):
        ad.tick()
        ad.plain_step(24, 0.120)
    ad.tick()
    assert ad.window == 0
    assert ad.plain_s(24) == pytest.approx(0.120)
    for i in range(GATE_STEPS):
        ad.speculative_step(24, 25 + 2 * (i % 2), 0.125)  # 26 tokens per 125 ms: 1.04 of plain
    assert ad.gate(24).gain() == pytest.approx(26 * 0.120 / 24 / 0.125, rel=0.02)
    ad.temperature = 1.0
    assert ad.plain_s(24) == pytest.approx(0.134)


def test_without_the_gate_only_branch_estimates_pause():
    ad, clock = fitted(gate=False)
    for _ in range(_CLEAN_SAMPLES):
        ad.plain_step(4, 0.010)
    rounds(ad, clock, "a", accepted=3, round_s=0.004)
    speculate(ad, 4 * GATE_STEPS, emitted=4, seconds=0.020)  # losing, as in the test above
    assert ad.gate(4).shut == 0 and ad.should_draft("a", 4)


def test_the_gate_waits_for_a_measurement_of_plain_decoding():
    ad, _ = fitted()
    speculate(ad, GATE_STEPS, emitted=1, seconds=1.0)
    assert ad.gate(4).steps == 0 and ad.gate(4).shut == 0


def test_disabled_always_drafts():
    ad, clock = fitted(enabled=False)
    rounds(ad, clock, "a", accepted=0, round_s=1.0)
    for _ in range(_CLEAN_SAMPLES):
        ad.plain_step(1, 0.001)
    speculate(ad, 2 * _CLEAN_REFRESH, emitted=1, seconds=1.0, num_decoding=1)
    assert all(ad.should_draft("a", 1) for _ in range(50))


def length_model(acceptance_rounds, batch, adaptive_length=True, **kw):
    """5 ms fixed + 1 ms per token steps, 2 ms draft forwards, one branch's rounds."""
    ad, clock = fitted(adaptive_length=adaptive_length, **kw)
    ad.drafted(0.006, 3)
    for accepted in acceptance_rounds:
        clock.t += 0.01
        ad.stepped("a", batch, L, accepted)
    return ad


def test_the_draft_length_is_the_longest_only_until_costs_are_measured():
    ad = AdaptiveSpeculation(L, adaptive_length=True)
    assert ad.draft_length("a", 1) == L
    ad.drafted(0.006, 3)
    assert ad.draft_length("a", 1) == L  # the target's step cost is not fitted yet
    assert length_model([0] * 20, 1).draft_length("a", 1) < L


def test_low_acceptance_and_many_branches_draft_short_high_acceptance_and_few_long():
    low, high = [0, 1, 0, 0] * 5, [L] * 20
    assert length_model(low, 64).draft_length("a", 64) == 1
    assert length_model(high, 1).draft_length("a", 1) == L
    ad = length_model([1] * 20, 1)  # a ~ 0.5: the cost of each length decides
    a, draft_s = ad.acceptance("a"), 0.002

    def rate(k):
        return expected_tokens(a, k) / (0.005 + k * draft_s + 0.001 * (k + 1))

    assert ad.draft_length("a", 1) == max(range(1, L + 1), key=rate)


def test_the_gain_is_judged_at_the_chosen_length():
    ad = length_model([0, 1, 0, 0] * 5, 64)
    assert ad.draft_length("a", 64) == 1 and ad.plain_s(64) is None  # plain: the step model's
    e = expected_tokens(ad.acceptance("a"), 1)
    round_gain = e * ad.steps.predict(64) / 0.01
    assert ad.gain("a", 64) == pytest.approx(min(round_gain, ad.target_gain(e, 64, 2)))


def test_off_or_for_a_tree_the_draft_length_is_fixed():
    assert length_model([0] * 20, 64, adaptive_length=False).draft_length("a", 64) == L
    assert length_model([0] * 20, 64, verify_tokens=11).draft_length("a", 64) == L


def test_a_prefill_call_counts_as_at_most_twice_a_draft_forward():
    ad = AdaptiveSpeculation(L)
    ad.drafted(0.006, 3)
    ad.drafted(1.0, 1)  # a new branch's prompt
    assert ad.draft_s == pytest.approx(0.8 * 0.002 + 0.2 * 0.004)
    ad.drafted(0.5, 0)  # nothing drafted
    assert ad.draft_s == pytest.approx(0.8 * 0.002 + 0.2 * 0.004)


def test_acceptance_by_confidence_starts_at_the_confidence_and_learns_from_verdicts():
    model = ConfidenceModel()
    assert model.acceptance(0.93, 0.0) == pytest.approx(0.95)  # the bin's midpoint
    assert model.acceptance(1.0, 0.0) == pytest.approx(0.95) and model.acceptance(0.0, 0.0) == pytest.approx(0.05)
    for _ in range(100):  # 0.9-sure tokens at T=0 are always accepted; the 0.3-sure second never tried...
        model.update([0.9, 0.3, 0.35], 0.0, num_accepted=0)
    assert model.acceptance(0.9, 0.0) < 0.1  # ... the first token was always rejected
    assert model.acceptance(0.3, 0.0) == pytest.approx(0.35)  # never tried: still the prior
    for _ in range(100):
        model.update([0.35, 0.75, 0.1], 0.0, num_accepted=2)  # 1 and 2 accepted, 3 rejected
    assert model.acceptance(0.35, 0.0) > 0.9 and model.acceptance(0.75, 0.0) > 0.9
    assert model.acceptance(0.1, 0.0) < 0.05
    assert model.acceptance(0.9, 1.0) == pytest.approx(0.95)  # another temperature: its own counts


def trim_ad(fixed_s, per_token_s, trim=True):
    ad, _ = fitted(step_s=lambda tokens: fixed_s + per_token_s * tokens, trim=trim)
    return ad


def test_few_branches_verify_unsure_tokens_many_verify_only_sure_ones():
    """A verified token costs per_token of the step; the plain token
    fixed / N + per_token. With 1 branch (fixed 45 ms, 4 ms a token) the
    first draft token pays at a chance of acceptance above 4 / 49; with 24,
    above 4 / 5.9, and each next token must raise the round's tokens per
    unit of target time too."""
    ad = trim_ad(0.045, 0.004)
    unsure, sure = [0.35, 0.35, 0.35], [0.95, 0.95, 0.95]
    assert ad.trim_length(unsure, 0.0, 1) == 2  # the third: a 4% chance of being reached and accepted
    assert ad.trim_length(unsure, 0.0, 24) == 0
    assert ad.trim_length(sure, 0.0, 24) == 3
    assert ad.trim_length([0.95, 0.45, 0.95], 0.0, 24) == 1  # cut at the first that does not pay


def test_nothing_is_trimmed_before_the_costs_are_measured_or_with_trim_off():
    assert AdaptiveSpeculation(L, trim=True).trim_length([0.05] * 3, 0.0, 24) == 3
    assert trim_ad(0.045, 0.004, trim=False).trim_length([0.05] * 3, 0.0, 24) == 3
    assert AdaptiveSpeculation(L, enabled=False, trim=True).trim_length([0.05] * 3, 0.0, 24) == 3
    assert AdaptiveSpeculation(L, verify_tokens=6, trim=True).trim is False  # trees are verified whole


@pytest.mark.parametrize("num_decoding", [1, 3, 8, 24, 64])
def test_the_cut_is_a_stopping_rule(num_decoding):
    """Lossless at T > 0 needs: whether token i is kept depends on the
    confidences of tokens 1..i only. So cutting a draft at k must agree with
    every shorter draft: its prefixes up to k are kept whole, and the prefix
    of length k + 1 is cut at k."""
    import random

    rng = random.Random(num_decoding)
    ad = trim_ad(0.045, 0.004)
    for _ in range(200):
        conf = [rng.random() for _ in range(6)]
        k = ad.trim_length(conf, 1.0, num_decoding)
        assert all(ad.trim_length(conf[:j], 1.0, num_decoding) == j for j in range(k + 1))
        if k < len(conf):
            assert ad.trim_length(conf[: k + 1], 1.0, num_decoding) == k
