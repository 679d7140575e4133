"""PlainCost: what a plain decode step costs, by the number of decoding branches N.

Adaptive speculation and the gate compare speculation with plain decoding at
the load it runs at (adaptive.py, gate.py), so the baseline must be right at
that N. Plain steps are measured at whatever N the engine runs, which under
a ToT workload sits at one N for long stretches (12 branches for three
phases, then 4 for the last): a line fitted to such samples has no spread to
find its slope in, and extrapolates the level of one N to another. Steps of
4 branches were predicted at the 12-branch level, 101 and 117 ms where plain
vLLM's took 71 and 73, so the gate read gains of 1.28 and 1.50 where
speculation was about 6% slower than plain
(``benchmarks/results/step_log_4tots_gate.md``).

So each N keeps its own moving average of measured steps; an N not measured
is predicted from the nearest measured one plus the target's per-token cost
(fitted on all decode and verify steps, whose token counts do spread) times
the difference. ``newest`` tells when a load range was last measured, so the
caller can measure plain decoding where it has not (adaptive.py's plain
windows).
"""

from __future__ import annotations

from vllm_seed.gate import load_range

_WEIGHT = 0.1  # of the newest sample in an N's moving average


class PlainCost:
    def __init__(self, min_samples: int = 3):
        self.min_samples = min_samples
        self.num_samples = 0
        self.at: dict[int, float] = {}  # N -> moving average of its plain steps' seconds
        self.measured_at: dict[int, int] = {}  # N -> engine step of its newest sample

    def add(self, num_decoding: int, seconds: float, step: int) -> None:
        old = self.at.get(num_decoding)
        self.at[num_decoding] = seconds if old is None else (1 - _WEIGHT) * old + _WEIGHT * seconds
        self.measured_at[num_decoding] = step
        self.num_samples += 1

    @property
    def ready(self) -> bool:
        """Whether it has ``min_samples`` samples to predict from."""
        return self.num_samples >= self.min_samples

    def predict(self, num_decoding: int, per_token: float = 0.0) -> float | None:
        """Seconds of a plain step of ``num_decoding`` branches; None until ``ready``."""
        if not self.ready:
            return None
        nearest = min(self.at, key=lambda n: (abs(n - num_decoding), -n))
        return max(self.at[nearest] + per_token * (num_decoding - nearest), 1e-6)

    def newest(self, load: int) -> int | None:
        """Engine step of the newest sample in load range ``load``
        (gate.load_range); None if it has none."""
        return max((step for n, step in self.measured_at.items() if load_range(n) == load), default=None)
