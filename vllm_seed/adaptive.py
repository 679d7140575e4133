"""Adaptive speculation: draft a branch only while drafting pays.

A round of a branch yields E tokens, with per-token acceptance a and draft
length L (the bonus token included):

    E(a, L) = (1 - a^(L+1)) / (1 - a)

and lasts ``round_s``: from one verification of the branch to the next, so
it includes the wait for the draft (held back, or a plain step decoded
meanwhile), queueing and the verify step.
Decoding plainly yields 1 token per plain step, ``plain_step_s``. The gain

    gain = E(a, L) * plain_step_s / round_s

is measured, not assumed: ``a`` per branch from its own verifications (the
geometric MLE, shrunk towards the global figure), ``round_s`` per branch, and
``plain_step_s`` from plain decoding alone: wall time between consecutive
plain decode steps while no draft is in flight, kept per number of decoding
branches N and step temperature (plain_cost.py). Drafters share the machine
with the serving stack (on CPU, the engine core and the API server share a
core with them), so a plain step measured while others draft is slower than
plain decoding would be; only steps with nothing drafting are a fair baseline.
When speculation keeps the drafters busy, every ``_CLEAN_REFRESH`` steps all
branches decode plainly for a few steps (a *plain window*) to measure it
afresh; so they do at a load range (``load_range``) and temperature not
measured lately, before it is judged. Low acceptance lowers E; a large batch
makes verify steps (B * (L+1) tokens) cost more than plain ones (B tokens);
saturated drafters, and drafting that slows the target's host, lengthen
rounds. Each shows up as a gain below 1.

One branch's rounds do not see what its verify tokens cost the other branches
of the step: where the target is the bottleneck (many branches), speculation
must also pay in target time. Per token, a plain branch costs
``per_token + fixed / N`` of it, and a round ``T * per_token + fixed / N`` for
E tokens (T: tokens verified per round, L + 1 for a chain), so the gain is the
smaller of the one above and

    target gain = E * (per_token + fixed / N) / (T * per_token + fixed / N)

which stays above 1 at small N, where the fixed cost dominates, and falls
towards E / T at large N, where drafting must then be accepted almost fully.

A branch whose gain falls below ``_PAUSE_BELOW`` decodes plainly for a
backoff number of steps (doubling up to a cap while it keeps not paying), then
drafts one probe round whose measurements decide again: it resumes when
drafting pays. The margin below 1 is a dead band: the estimate comes from a
few noisy rounds, near 1 drafting and not are worth the same, and a wrong
pause costs at least the minimum backoff of plain steps, while a loss the
branches do not see is the gate's to catch (below). A new branch is judged by
everyone's measurements (a ToT node's siblings need not each pay for learning
that drafting does not pay), and pauses as long as the last branch whose own
probe did not pay at its load pauses next (``backoff`` by regime, below), while
that pause lasts: each probe costs the branch a draft call and a verify step
(and a step held back, if its draft lands after the step; rounds.py), and under
load every reply would otherwise pay for its own climb from the minimum
backoff. Once it is over, or after a probe there that pays, a new
branch pauses the minimum backoff again, so probes go on at every load and a
change is noticed.

A round's time depends on the load: with more branches the drafter drafts for
more of them and the verify step carries more tokens. So round times, a
branch's own and everyone's, count only at the range of N they were measured
at (``load_range`` in gate.py); at a range with none yet, a branch drafts and
measures.

Per-branch estimates can still be wrong about the whole: rounds of branches
that share a drafter, steps that mix verified and paused branches, drafting
that slows the host. So a gate per range of N also judges speculation as a
whole, by its outcome (gate.py). Whether speculation pays depends on the
temperature too (sampled tokens are accepted less), so
the gates, and the pauses new branches inherit, are kept per *regime*: the
load range and the step's temperature (its decoding branches' largest, to
0.1; ``temperature``, set by the scheduler each step). Otherwise a gate shut
by sampled requests stays shut, up to GATE_MAX_OFF steps, for greedy ones
that would gain.

The draft length L is chosen the same way, per branch and round (chains only;
a token tree's shape is fixed): the L in 1..num_draft with the most tokens per
unit of cost,

    E(a, L) / ((fixed + L * draft_s) / N + (L + 1) * per_token)

where ``draft_s`` is the measured time of one batched draft forward (drafter
calls over their forwards). A round's draft forwards and verify step's fixed
cost are shared by its N branches; each verified token costs ``per_token``.
Low acceptance and many branches favour short drafts, high acceptance and few
branches long ones. Until the costs are measured, L is num_draft.

A chain draft that has landed is then *trimmed* (``trim``): its token i is
verified only if it is worth its place in the verify step. The draft's own
confidence in token i, the largest probability of the draft distribution it
was drawn from, predicts its acceptance well (a draft that is sure is
seldom wrong); ``ConfidenceModel`` learns acceptance by confidence online
from the verdicts. With P_i the chance that tokens 1..i are all accepted,
E_{i-1} and C_{i-1} the tokens and target cost of the draft cut before i
(C_0 = fixed / N + per_token: the plain token's), token i is kept while

    P_i * C_{i-1} > E_{i-1} * per_token

(it raises the round's tokens per unit of target time), and the draft is cut
at the first that is not. A cut to nothing is a plain step, and for the
branch's estimate a round that yielded that one token (``cut``). The decision for
token i uses only the confidences of tokens 1..i, each a property of the
distribution the token was drawn from given the tokens before it, never the
token drawn: a stopping rule of that kind leaves speculative sampling
lossless. Under load, where a verified token costs nearly a plain step, only
sure tokens are verified; with few branches, where the step's fixed cost
dominates, nearly all.

Pure Python, clock injected, like rounds.py.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from vllm_seed.gate import GATE_STEPS, Gate, load_range, temperature_class
from vllm_seed.plain_cost import PlainCost

_EMA = 0.2  # weight of the newest sample in moving averages
_PRIOR = 4.0  # pseudo-observations of the global acceptance in a branch's estimate
_PAUSE_BELOW = 0.9  # a branch pauses when its estimated gain is below this
_MIN_BACKOFF, _MAX_BACKOFF = 8, 256  # plain steps before a paused branch probes again
_CLEAN_REFRESH = 256  # engine steps between measurements of plain decoding alone
_CLEAN_SAMPLES = 4  # plain steps with nothing drafting a plain window waits for
_CLEAN_WINDOW = 16  # at most this many steps: drafts in flight may take long to land
_RANGE_REFRESH = 2 * _CLEAN_REFRESH  # engine steps after which a load range's plain steps are stale


_CONF_BINS = 10  # confidence bins of width 0.1
_CONF_PRIOR = 8.0  # pseudo-tokens at a bin's own confidence in its acceptance estimate


class ConfidenceModel:
    """Acceptance of a chain draft token by its confidence, learned from
    verdicts: per temperature (to 0.1) and confidence bin, the tokens tried
    (all tokens before them in their draft accepted) and accepted. A bin
    starts at its own midpoint: a draft that is 70% sure of a token is taken
    to be right 70% of the time until verdicts say otherwise."""

    def __init__(self):
        self.counts: dict[tuple[float, int], list[float]] = {}  # key -> [tried, accepted]

    @staticmethod
    def _key(confidence: float, temperature: float) -> tuple[float, int]:
        return temperature_class(temperature), min(max(int(confidence * _CONF_BINS), 0), _CONF_BINS - 1)

    def acceptance(self, confidence: float, temperature: float) -> float:
        key = self._key(confidence, temperature)
        tried, accepted = self.counts.get(key, (0.0, 0.0))
        prior = (key[1] + 0.5) / _CONF_BINS
        return (accepted + _CONF_PRIOR * prior) / (tried + _CONF_PRIOR)

    def update(self, confidence: list[float], temperature: float, num_accepted: int) -> None:
        """A verified draft with these token confidences had its first
        ``num_accepted`` tokens accepted: those were tried and accepted, the
        next (if any) tried and rejected, the rest never tried."""
        for i, conf in enumerate(confidence[: num_accepted + 1]):
            counts = self.counts.setdefault(self._key(conf, temperature), [0.0, 0.0])
            counts[0] += 1
            counts[1] += i < num_accepted


def expected_tokens(acceptance: float, num_draft: int) -> float:
    """E(a, L): tokens one round yields, bonus token included."""
    if acceptance >= 1.0:
        return num_draft + 1.0
    return (1.0 - acceptance ** (num_draft + 1)) / (1.0 - acceptance)


@dataclass
class _Branch:
    accepted: float = 0.0
    rejected: float = 0.0
    round_s: float | None = None
    round_range: int = 0  # the load range its round_s was measured at
    last_step_at: float | None = None  # when its last step (plain or verify) completed
    paused_steps: int = 0  # plain steps left before the next probe round
    probe: bool = False  # the pause is over: draft one round whatever the estimate
    backoff: int = _MIN_BACKOFF
    cut: bool = False  # its landed draft was cut to nothing: this step is a round (``cut``)

    def measured_at(self, load: int) -> bool:
        """Whether it has a round of its own at this load range."""
        return self.round_s is not None and self.round_range == load


def _ema(old: float | None, sample: float) -> float:
    return sample if old is None else (1 - _EMA) * old + _EMA * sample


class _StepCostModel:
    """Exponentially weighted least squares of step seconds on step tokens."""

    def __init__(self, min_samples: float = 4):
        self.min_samples = min_samples
        self.n = self.x = self.y = self.xx = self.xy = 0.0

    def add(self, tokens: int, seconds: float) -> None:
        keep = 1.0 - _EMA / 4  # a slower average: the fit needs a spread of sizes
        self.n, self.x, self.y = keep * self.n + 1, keep * self.x + tokens, keep * self.y + seconds
        self.xx, self.xy = keep * self.xx + tokens * tokens, keep * self.xy + tokens * seconds

    def fit(self) -> tuple[float, float] | None:
        """(fixed seconds, seconds per token), or None before enough steps."""
        if self.n < self.min_samples:
            return None
        var = self.n * self.xx - self.x * self.x
        slope = max(0.0, (self.n * self.xy - self.x * self.y) / var) if var > 1e-9 else 0.0
        fixed = (self.y - slope * self.x) / self.n
        if fixed < 0:  # noise; a line through the origin predicts small sizes better
            return 0.0, self.xy / self.xx
        return fixed, slope

    def predict(self, tokens: int) -> float | None:
        fit = self.fit()
        return None if fit is None else max(fit[0] + fit[1] * tokens, 1e-6)


class AdaptiveSpeculation:
    def __init__(
        self, num_draft: int, enabled: bool = True, clock=time.monotonic, verify_tokens: int | None = None,
        adaptive_length: bool = False, gate: bool = True, trim: bool = False,
    ):
        self.num_draft = num_draft
        self.trim = trim and enabled and verify_tokens is None
        self.confidence = ConfidenceModel()
        self.tree_tokens = verify_tokens  # a token tree's tokens verified per round; None: a chain
        self.enabled = enabled
        self.gated = gate  # off: no gate ever shuts (gate.py)
        self.adaptive_length = adaptive_length and verify_tokens is None
        self.draft_s: float | None = None  # seconds per batched draft forward
        self.clock = clock
        self.branches: dict[str, _Branch] = {}
        self.steps = _StepCostModel()
        self.accepted = self.rejected = 0.0  # global, for the prior
        self.round_s: dict[int, float] = {}  # everyone's, by load range: a new branch's estimate
        self.plain = PlainCost(min_samples=3)  # plain step seconds by N, nothing drafting
        # Engine steps since the last sample of it or plain window: the first
        # window comes early, the global gate needs it.
        self.since_plain = _CLEAN_REFRESH - GATE_STEPS
        self.window = 0  # steps left in a plain window; 0: none
        self.window_samples = 0
        self.temperature = 0.0  # this step's: its decoding branches' largest (module docstring)
        self.gates: dict[tuple[int, float], Gate] = {}  # by regime
        # By regime: (a new branch's first pause, until which engine step).
        self.backoff: dict[tuple[int, float], tuple[int, int]] = {}
        self.step = 0  # engine steps so far

    def tick(self, num_decoding: int = 0) -> None:
        """Once per engine step, with ``num_decoding`` branches decoding (and
        after ``temperature`` is set): count this step's regime's gate down,
        if shut; open a plain window when the measurement of plain decoding
        is stale, close it once it has its samples. A shut gate counts only
        its own regime's decode steps, not the steps other regimes run
        meanwhile (a ToT's levels alternate loads; gate.py)."""
        self.step += 1
        self.since_plain += 1
        if num_decoding:
            self.gate(num_decoding).tick()
        if self.window:
            self.window = 0 if self.window_samples >= _CLEAN_SAMPLES else self.window - 1
        elif self.enabled and self.since_plain >= _CLEAN_REFRESH:
            self._open_window()

    def _open_window(self) -> None:
        self.window, self.window_samples, self.since_plain = _CLEAN_WINDOW, 0, 0

    def load(self, num_decoding: int) -> None:
        """This step's decoding branches, before anything is drafted (and
        after ``temperature`` is set): open a plain window where plain
        decoding was not measured at this load range and temperature lately
        (plain_cost.py: the baseline must be right at the load). Until
        a first baseline exists, the first window comes as ``since_plain``
        schedules it."""
        if not self.enabled or self.window or num_decoding == 0 or not self.plain.ready:
            return
        newest = self.plain.newest(load_range(num_decoding), self.temperature)
        if newest is None or self.step - newest > _RANGE_REFRESH:
            self._open_window()

    def plain_s(self, num_decoding: int) -> float | None:
        """Plain decoding's step time at ``num_decoding`` branches and this
        step's temperature (plain_cost.py)."""
        fit = self.steps.fit()
        return self.plain.predict(num_decoding, 0.0 if fit is None else fit[1], self.temperature)

    def plain_step(self, num_decoding: int, seconds: float) -> None:
        """A decode step of ``num_decoding`` plain branches that took
        ``seconds`` of wall time, end to end, with no draft in flight. A step
        slowed by something else on the host (the API server taking new
        requests) counts as at most twice the prediction: the baseline must
        not flatter speculation."""
        predicted = self.plain_s(num_decoding)
        self.plain.add(num_decoding, seconds if predicted is None else min(seconds, 2 * predicted), self.step,
                       self.temperature)
        self.since_plain = 0
        self.window_samples += 1

    def speculative_step(self, num_decoding: int, num_emitted: int, seconds: float) -> None:
        """A decode step while speculation is on: ``num_decoding`` branches
        (scheduled or held back) emitted ``num_emitted`` tokens in ``seconds``
        of wall time since the previous step ended."""
        plain_s = self.plain_s(num_decoding)
        gate = self.gate(num_decoding)
        if gate.shut or self.window or plain_s is None or num_decoding == 0 or not (self.enabled and self.gated):
            return
        gate.add(seconds, num_emitted * plain_s / num_decoding)

    def gate(self, num_decoding: int) -> Gate:
        return self.gates.setdefault(self.regime(num_decoding), Gate())

    def regime(self, num_decoding: int) -> tuple[int, float]:
        """What gates and inherited pauses are kept by: the load range and the
        step's temperature (module docstring)."""
        return load_range(num_decoding), temperature_class(self.temperature)

    def step_done(self, num_tokens: int, seconds: float) -> None:
        """One decode or verify step (no prefill): ``num_tokens`` scheduled,
        ``seconds`` it would cost plainly."""
        if num_tokens > 0:
            self.steps.add(num_tokens, seconds)

    def stepped(self, req_id: str, num_decoding: int, num_drafted: int = 0, num_accepted: int = 0) -> None:
        """``req_id`` decoded in the step that just completed, with
        ``num_decoding`` branches decoding: plainly (``num_drafted`` 0), or by
        verifying a draft of ``num_drafted`` tokens."""
        b = self.branches.setdefault(req_id, _Branch())
        now = self.clock()
        since = None if b.last_step_at is None else now - b.last_step_at
        if b.cut and not num_drafted:  # the round of a draft cut to nothing: its first token rejected
            num_drafted, num_accepted = 1, 0
        b.cut = False
        if num_drafted:
            rejected = 1.0 if num_accepted < num_drafted else 0.0
            b.accepted += num_accepted
            b.rejected += rejected
            self.accepted += num_accepted
            self.rejected += rejected
            if since is not None:  # the round: draft wait, queueing and the verify step
                load = load_range(num_decoding)
                b.round_s = _ema(b.round_s if b.round_range == load else None, since)
                b.round_range = load
                self.round_s[load] = _ema(self.round_s.get(load), since)
        b.last_step_at = now

    def late_draft(self, req_id: str, agreed: int) -> None:
        """A draft of ``req_id`` landed after its branch decoded tokens
        meanwhile (rounds.catch_up): ``agreed`` > 0 of them were its first
        tokens, counted as accepted; 0: they were not, counted as a rejection.
        At T=0 that is what verifying them would have found; at T > 0 a
        sampled token agrees less often than a draft token is accepted, and
        the rounds of a branch whose late drafts seldom agree yield little
        beyond its plain tokens, so its acceptance, and gain, must say so."""
        b = self.branches.setdefault(req_id, _Branch())
        if agreed:
            b.accepted += agreed
            self.accepted += agreed
        else:
            b.rejected += 1
            self.rejected += 1

    def cut(self, req_id: str) -> None:
        """A draft of ``req_id`` landed and was cut to nothing (``trim_length``
        0): the branch decodes a plain token, having paid for the draft (a
        drafter call, perhaps steps held back for it). That step, once
        ``stepped``, counts as a round that yielded one token: a draft whose
        first token was rejected, its round time measured. Counted as no
        round, a branch whose drafts are all cut never learns that drafting
        it does not pay, and drafts again every step on its old estimate."""
        self.branches.setdefault(req_id, _Branch()).cut = True

    def drafted(self, seconds: float, forwards: int) -> None:
        """A drafter call of ``forwards`` batched forwards took ``seconds``. A
        call that prefills a new branch's prompt counts as at most twice the
        estimate: the rule is a round's few new tokens."""
        if forwards > 0:
            sample = seconds / forwards
            self.draft_s = _ema(self.draft_s, sample if self.draft_s is None else min(sample, 2 * self.draft_s))

    def draft_length(self, req_id: str, num_decoding: int) -> int:
        """Draft tokens of ``req_id``'s next round (module docstring)."""
        fit = self.steps.fit()
        if not self.adaptive_length or fit is None or self.draft_s is None:
            return self.num_draft
        fixed, per_token = max(fit[0], 0.0), fit[1]
        n, a = max(num_decoding, 1), self.acceptance(req_id)

        def rate(length: int) -> float:
            cost = (fixed + length * self.draft_s) / n + (length + 1) * per_token
            return expected_tokens(a, length) / max(cost, 1e-9)

        return max(range(1, self.num_draft + 1), key=rate)  # a tie goes to the shorter

    def trim_length(self, confidence: list[float], temperature: float, num_decoding: int) -> int:
        """Tokens to verify of a chain draft with these token confidences,
        with ``num_decoding`` branches decoding (module docstring): all of
        them until the target's step costs are measured, or with ``trim`` off."""
        fit = self.steps.fit()
        if not self.trim or fit is None:
            return len(confidence)
        fixed, per_token = max(fit[0], 0.0), fit[1]
        tokens, cost, reach = 1.0, fixed / max(num_decoding, 1) + per_token, 1.0
        for i, conf in enumerate(confidence):
            reach *= self.confidence.acceptance(conf, temperature)
            if reach * cost <= tokens * per_token:
                return i
            tokens, cost = tokens + reach, cost + per_token
        return len(confidence)

    def verify_tokens(self, num_draft: int) -> int:
        """Tokens one round verifies: a chain's draft and bonus, or the tree's."""
        return num_draft + 1 if self.tree_tokens is None else self.tree_tokens

    def acceptance(self, req_id: str) -> float:
        prior = self.accepted / max(self.accepted + self.rejected, 1.0) if self.accepted else 0.5
        b = self.branches.get(req_id, _Branch())
        return (b.accepted + _PRIOR * prior) / (b.accepted + b.rejected + _PRIOR)

    def gain(self, req_id: str, num_decoding: int) -> float | None:
        """Measured gain of drafting ``req_id``; None until it is measurable.
        A branch without rounds of its own at this load is judged by
        everyone's."""
        b = self.branches.get(req_id)
        load = load_range(num_decoding)
        round_s = b.round_s if b is not None and b.measured_at(load) else self.round_s.get(load)
        plain_s = self.plain_s(num_decoding) or self.steps.predict(num_decoding)
        if round_s is None or plain_s is None:
            return None
        length = self.draft_length(req_id, num_decoding)
        e = expected_tokens(self.acceptance(req_id), length)
        return min(e * plain_s / round_s, self.target_gain(e, num_decoding, self.verify_tokens(length)))

    def fixed_step_s(self) -> float | None:
        """The part of a target step's time that does not grow with its tokens."""
        fit = self.steps.fit()
        return None if fit is None else max(fit[0], 0.0)

    def target_gain(self, e: float, num_decoding: int, verify_tokens: int) -> float:
        """E tokens per round against plain decoding, in target time (module docstring)."""
        fixed, per_token = self.steps.fit() or (1.0, 0.0)
        share = max(fixed, 0.0) / max(num_decoding, 1)  # the step's fixed cost, per branch
        return e * (per_token + share) / (per_token * verify_tokens + share)

    def should_draft(self, req_id: str, num_decoding: int) -> bool:
        """Asked once per step for each idle decoding branch."""
        if not self.enabled:
            return True
        if self.window or self.gate(num_decoding).shut:
            return False
        b = self.branches.setdefault(req_id, _Branch())
        if b.paused_steps > 0:
            b.paused_steps -= 1
            b.probe = b.paused_steps == 0
            return False
        if b.probe:  # its own measurement decides, not the stale estimate
            b.probe = False
            return True
        gain = self.gain(req_id, num_decoding)
        own = b.measured_at(load_range(num_decoding))
        regime = self.regime(num_decoding)
        if gain is None or gain >= _PAUSE_BELOW:
            if gain is not None:
                b.backoff = _MIN_BACKOFF
                if own:
                    self.backoff.pop(regime, None)
            return True
        if own:
            self.backoff[regime] = (b.backoff, self.step + b.backoff)
        elif (learned := self.backoff.get(regime)) and self.step < learned[1]:
            b.backoff = max(b.backoff, learned[0])
        b.paused_steps = b.backoff - 1
        b.backoff = min(2 * b.backoff, _MAX_BACKOFF)
        b.round_s = None  # the probe round measures afresh
        return False

    def remove(self, req_id: str) -> None:
        self.branches.pop(req_id, None)
