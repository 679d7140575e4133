"""Adaptive speculation: draft a branch only while drafting pays.

A round of a branch yields E tokens, with per-token acceptance a and draft
length L (the bonus token included):

    E(a, L) = (1 - a^(L+1)) / (1 - a)

and lasts ``round_s``: from one verification of the branch to the next, so
it includes the wait for the draft (held back), queueing and the verify step.
Decoding plainly yields 1 token per plain step, ``plain_step_s``. The gain

    gain = E(a, L) * plain_step_s / round_s

is measured, not assumed: ``a`` per branch from its own verifications (the
geometric MLE, shrunk towards the global figure), ``round_s`` per branch, and
``plain_step_s`` from a linear model of the target's step time in scheduled
tokens, fitted over decode and verify steps (fixed + per_token * tokens, at the
current number of decoding branches N). Low acceptance lowers E; a large batch
makes verify steps (B * (L+1) tokens) cost more than plain ones (B tokens);
saturated drafters lengthen rounds. Each shows up as a gain below 1.

One branch's rounds do not see what its verify tokens cost the other branches
of the step: where the target is the bottleneck (many branches), speculation
must also pay in target time. Per token, a plain branch costs
``per_token + fixed / N`` of it, and a round ``T * per_token + fixed / N`` for
E tokens (T: tokens verified per round, L + 1 for a chain), so the gain is the
smaller of the one above and

    target gain = E * (per_token + fixed / N) / (T * per_token + fixed / N)

which stays above 1 at small N, where the fixed cost dominates, and falls
towards E / T at large N, where drafting must then be accepted almost fully.

A branch whose gain falls below 1 decodes plainly for a backoff number of
steps (doubling up to a cap while it keeps not paying), then drafts one probe
round whose measurements decide again: it resumes when drafting pays. A new
branch is judged by everyone's measurements (a ToT node's siblings need not
each pay for learning that drafting does not pay), but pauses at most the
minimum backoff before its own probe, so a changed load is noticed.

Pure Python, clock injected, like rounds.py.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

_EMA = 0.2  # weight of the newest sample in moving averages
_PRIOR = 4.0  # pseudo-observations of the global acceptance in a branch's estimate
_MIN_BACKOFF, _MAX_BACKOFF = 8, 256  # plain steps before a paused branch probes again


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
    last_step_at: float | None = None  # when its last step (plain or verify) completed
    last_was_plain: bool = False
    paused_steps: int = 0  # plain steps left before the next probe round
    probe: bool = False  # the pause is over: draft one round whatever the estimate
    backoff: int = _MIN_BACKOFF


def _ema(old: float | None, sample: float) -> float:
    return sample if old is None else (1 - _EMA) * old + _EMA * sample


class _StepCostModel:
    """Exponentially weighted least squares of step seconds on step tokens."""

    def __init__(self):
        self.n = self.x = self.y = self.xx = self.xy = 0.0

    def add(self, tokens: int, seconds: float) -> None:
        keep = 1.0 - _EMA / 4  # a slower average: the fit needs a spread of sizes
        self.n, self.x, self.y = keep * self.n + 1, keep * self.x + tokens, keep * self.y + seconds
        self.xx, self.xy = keep * self.xx + tokens * tokens, keep * self.xy + tokens * seconds

    def fit(self) -> tuple[float, float] | None:
        """(fixed seconds, seconds per token), or None before 4 steps."""
        if self.n < 4:
            return None
        var = self.n * self.xx - self.x * self.x
        slope = max(0.0, (self.n * self.xy - self.x * self.y) / var) if var > 1e-9 else 0.0
        return (self.y - slope * self.x) / self.n, slope

    def predict(self, tokens: int) -> float | None:
        fit = self.fit()
        return None if fit is None else max(fit[0] + fit[1] * tokens, 1e-6)


class AdaptiveSpeculation:
    def __init__(
        self, num_draft: int, enabled: bool = True, clock=time.monotonic, verify_tokens: int | None = None,
    ):
        self.num_draft = num_draft
        self.verify_tokens = num_draft + 1 if verify_tokens is None else verify_tokens
        self.enabled = enabled
        self.clock = clock
        self.branches: dict[str, _Branch] = {}
        self.steps = _StepCostModel()
        self.accepted = self.rejected = 0.0  # global, for the prior
        self.round_s: float | None = None  # global: a new branch's estimate
        self.plain_s: float | None = None  # global: measured plain step interval

    def step_done(self, num_tokens: int, seconds: float) -> None:
        """One decode or verify step (no prefill): ``num_tokens`` scheduled,
        ``seconds`` it would cost plainly."""
        if num_tokens > 0:
            self.steps.add(num_tokens, seconds)

    def stepped(self, req_id: str, num_drafted: int = 0, num_accepted: int = 0) -> None:
        """``req_id`` decoded in the step that just completed: plainly
        (``num_drafted`` 0), or by verifying a draft of ``num_drafted`` tokens."""
        b = self.branches.setdefault(req_id, _Branch())
        now = self.clock()
        since = None if b.last_step_at is None else now - b.last_step_at
        if num_drafted:
            rejected = 1.0 if num_accepted < num_drafted else 0.0
            b.accepted += num_accepted
            b.rejected += rejected
            self.accepted += num_accepted
            self.rejected += rejected
            if since is not None:  # the round: draft wait, queueing and the verify step
                b.round_s = _ema(b.round_s, since)
                self.round_s = _ema(self.round_s, since)
        elif since is not None and b.last_was_plain:
            self.plain_s = _ema(self.plain_s, since)
        b.last_step_at, b.last_was_plain = now, not num_drafted

    def acceptance(self, req_id: str) -> float:
        prior = self.accepted / max(self.accepted + self.rejected, 1.0) if self.accepted else 0.5
        b = self.branches.get(req_id, _Branch())
        return (b.accepted + _PRIOR * prior) / (b.accepted + b.rejected + _PRIOR)

    def gain(self, req_id: str, num_decoding: int) -> float | None:
        """Measured gain of drafting ``req_id``; None until it is measurable.
        A branch without rounds of its own is judged by everyone's."""
        b = self.branches.get(req_id)
        round_s = b.round_s if b is not None and b.round_s is not None else self.round_s
        plain_s = self.plain_s if self.plain_s is not None else self.steps.predict(num_decoding)
        if round_s is None or plain_s is None:
            return None
        e = expected_tokens(self.acceptance(req_id), self.num_draft)
        return min(e * plain_s / round_s, self.target_gain(e, num_decoding))

    def fixed_step_s(self) -> float | None:
        """The part of a target step's time that does not grow with its tokens."""
        fit = self.steps.fit()
        return None if fit is None else max(fit[0], 0.0)

    def target_gain(self, e: float, num_decoding: int) -> float:
        """E tokens per round against plain decoding, in target time (module docstring)."""
        fixed, per_token = self.steps.fit() or (1.0, 0.0)
        share = max(fixed, 0.0) / max(num_decoding, 1)  # the step's fixed cost, per branch
        return e * (per_token + share) / (per_token * self.verify_tokens + share)

    def should_draft(self, req_id: str, num_decoding: int) -> bool:
        """Asked once per step for each idle decoding branch."""
        if not self.enabled:
            return True
        b = self.branches.setdefault(req_id, _Branch())
        if b.paused_steps > 0:
            b.paused_steps -= 1
            b.probe = b.paused_steps == 0
            return False
        if b.probe:  # its own measurement decides, not the stale estimate
            b.probe = False
            return True
        gain = self.gain(req_id, num_decoding)
        if gain is None or gain >= 1.0:
            if gain is not None:
                b.backoff = _MIN_BACKOFF
            return True
        b.paused_steps = b.backoff - 1
        b.backoff = min(2 * b.backoff, _MAX_BACKOFF)
        b.round_s = None  # the probe round measures afresh
        return False

    def remove(self, req_id: str) -> None:
        self.branches.pop(req_id, None)
