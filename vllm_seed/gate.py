"""The gate: speculation as a whole, judged by its outcome.

Per-branch estimates (adaptive.py) can be wrong about the whole: rounds of
branches that share a drafter, steps that mix verified and paused branches,
drafting that slows the host. So a gate judges speculation by what it did:
over the last ~``GATE_STEPS`` decode steps with speculation on, the time
plain decoding would have taken for the tokens emitted (each step's tokens x
plain_step_s(N) / N) over the time they took. Below 1, speculation is off for
every branch for ``GATE_MIN_OFF`` steps (doubling up to ``GATE_MAX_OFF``
while it keeps losing), then on again to be judged afresh. Whether
speculation pays depends mostly on the load, so there is one gate per range of
N (``load_range``: 1, 2-3, 4-7, 8-15, ...).
"""

from __future__ import annotations

from dataclasses import dataclass

GATE_STEPS = 32  # decode steps of speculation a gate judges on
GATE_MIN_OFF, GATE_MAX_OFF = 64, 1024  # engine steps a gate stays shut once speculation lost


@dataclass
class Gate:
    """Speculation as a whole at one range of load (module docstring)."""
    spec_s: float = 0.0  # decayed sums over decode steps with speculation on:
    plain_s: float = 0.0  # their wall time, and plain decoding's for their tokens
    steps: int = 0  # decode steps in those sums since the gate last opened
    shut: int = 0  # engine steps left with speculation off
    shut_steps: int = GATE_MIN_OFF  # how long the next shutting lasts

    def gain(self) -> float:
        return self.plain_s / self.spec_s if self.spec_s > 0 else 1.0

    def add(self, seconds: float, plain_s: float) -> None:
        keep = 1.0 - 1.0 / GATE_STEPS
        self.spec_s = keep * self.spec_s + seconds
        self.plain_s = keep * self.plain_s + plain_s
        self.steps += 1
        if self.steps < GATE_STEPS:
            return
        if self.gain() < 1.0:
            self.shut, self.shut_steps = self.shut_steps, min(2 * self.shut_steps, GATE_MAX_OFF)
        else:
            self.shut_steps = GATE_MIN_OFF

    def tick(self) -> None:
        if self.shut:
            self.shut -= 1
            if not self.shut:  # open: judged afresh
                self.spec_s = self.plain_s = 0.0
                self.steps = 0


def load_range(num_decoding: int) -> int:
    """The gate of ``num_decoding`` branches: 1, 2-3, 4-7, 8-15, ..."""
    return max(num_decoding, 1).bit_length()
