"""The gate: speculation as a whole, judged by its outcome.

Per-branch estimates (adaptive.py) can be wrong about the whole: rounds of
branches that share a drafter, steps that mix verified and paused branches,
drafting that slows the host. So a gate judges speculation by what it did:
over the last ~``GATE_STEPS`` decode steps with speculation on, the time
plain decoding would have taken for the tokens emitted (each step's tokens x
plain_step_s(N) / N) over the time they took. Whether speculation pays
depends mostly on the load and the temperature, so there is one gate per
range of N (``load_range``: 1, 2-3, 4-7, 8-15, ...) and step temperature
(``AdaptiveSpeculation.regime``).

A gate shuts when speculation loses beyond the noise: its gain is below 1
and the time it saved per step, summed over the window, lies more than
``GATE_Z`` standard errors below 0 (the spread measured from the steps
themselves). The gain is judged at every step once the window is full, and
a few branches' steps are noisy (an accepted draft or none): with the gain
alone, a running estimate near 1.1 dips below 1 sooner or later and shuts a
gate that pays; many branches' steps average their rounds, the spread is
small, and the test shuts a losing gate about as soon as the gain alone
would. Shut, speculation is off for every branch for ``GATE_MIN_OFF`` decode
steps of its regime (doubling up to ``GATE_MAX_OFF`` while it keeps losing),
then on again to be judged afresh. Steps at other regimes do not count: a
ToT's levels alternate loads, and counted in every engine step, a losing
gate's off time ran out largely at other loads (bench_tot_8tots_cut, 16-31
branches: off for 59-320 of that regime's steps at a time, open for 6-97,
22% of them, and an open step emitted 8% fewer tokens per second than a shut
one).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

GATE_STEPS = 32  # decode steps of speculation a gate judges on
GATE_MIN_OFF, GATE_MAX_OFF = 64, 1024  # its regime's decode steps a gate stays shut once speculation lost
GATE_Z = 1.645  # standard errors below no gain that shut a gate: a one-sided 95% test
_KEEP = 1.0 - 1.0 / GATE_STEPS  # decay per step of the window's sums
_KEEP2 = _KEEP * _KEEP  # and of sums weighted by w^2


@dataclass
class Gate:
    """Speculation as a whole at one range of load (module docstring)."""
    spec_s: float = 0.0  # decayed sums over decode steps with speculation on:
    plain_s: float = 0.0  # their wall time, and plain decoding's for their tokens
    # For the saving's standard error, with w the steps' decayed weights and d
    # each step's saving (plain_s - wall time): sums of w^2 d and w^2 d^2 (the
    # sums of w and w^2 follow from ``steps``).
    w2d: float = 0.0
    w2dd: float = 0.0
    steps: int = 0  # decode steps in those sums since the gate last opened
    shut: int = 0  # engine steps left with speculation off
    shut_steps: int = GATE_MIN_OFF  # how long the next shutting lasts

    def gain(self) -> float:
        return self.plain_s / self.spec_s if self.spec_s > 0 else 1.0

    def z(self) -> float:
        """The window's saving (sum of w d) in standard errors: sum of w^2 (d - mean)^2."""
        w, w2 = (1 - _KEEP**self.steps) / (1 - _KEEP), (1 - _KEEP2**self.steps) / (1 - _KEEP2)
        saved = self.plain_s - self.spec_s
        mean = saved / w if w else 0.0
        var = self.w2dd - 2 * mean * self.w2d + mean * mean * w2
        if var <= 1e-18:  # steps all alike: the sign decides
            return math.copysign(math.inf, saved) if saved else 0.0
        return saved / math.sqrt(var)

    def add(self, seconds: float, plain_s: float) -> None:
        d = plain_s - seconds
        self.spec_s = _KEEP * self.spec_s + seconds
        self.plain_s = _KEEP * self.plain_s + plain_s
        self.w2d, self.w2dd = _KEEP2 * self.w2d + d, _KEEP2 * self.w2dd + d * d
        self.steps += 1
        if self.steps < GATE_STEPS:
            return
        if self.gain() >= 1.0:
            self.shut_steps = GATE_MIN_OFF
        elif self.z() < -GATE_Z:
            self.shut, self.shut_steps = self.shut_steps, min(2 * self.shut_steps, GATE_MAX_OFF)

    def tick(self) -> None:
        if self.shut:
            self.shut -= 1
            if not self.shut:  # open: judged afresh
                self.spec_s = self.plain_s = self.w2d = self.w2dd = 0.0
                self.steps = 0


def load_range(num_decoding: int) -> int:
    """The gate of ``num_decoding`` branches: 1, 2-3, 4-7, 8-15, ..."""
    return max(num_decoding, 1).bit_length()


def temperature_class(temperature: float) -> float:
    """The temperature gates, inherited pauses and plain baselines are kept
    by: to 0.1 (adaptive.py's regimes)."""
    return round(temperature, 1)
