"""PlainCost: what a plain decode step costs, by the number of decoding branches N
and the step's temperature.

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

So each N keeps its own measured steps; an N not measured is predicted from
the nearest measured one plus the target's per-token cost (fitted on all
decode and verify steps, whose token counts do spread) times the difference.

An N's estimate is the lower quartile of its newest ``_KEPT`` samples, not a
long moving average. A plain window's few fresh samples must decide it: with
one ToT at T=1, 3 branches were predicted at 81 ms, a moving average still
carrying older, slower samples (88 ms before the window), where the run's
own plain steps took 67-69; the gate read a gain near 1.03 for 162 verify
steps that emitted a token every 78 ms per branch, about 13% slower than
plain, and that repetition ran 0.78 of plain (``bench_tot_plain_cost.md``,
one ToT, T=1, repetition 0). And a quartile, not the mean or median: a step
can run slow when something else on the host takes its time (what did, here,
was not measured), but not faster than its own work, so the slow samples are
the noise; in another repetition 3 of a window's 4 samples at 1 branch took
69-78 ms against the usual 53-60.

And each temperature (to 0.1, as adaptive.py's regimes) keeps its own: a
sampled step costs more than a greedy one. With 16-31 branches, greedy
repetitions that followed sampled ones predicted a plain step at 5.35 and
5.67 ms per token where their own greedy plain steps took 5.04, and the gate
read verify steps that ran 1.05 and 0.98 of plain as gains of 1.14 and 1.12
(``bench_tot_8tots.md``). A temperature without samples has no estimate.

``newest`` tells when a load range was last measured at a temperature, so
the caller can measure plain decoding where it has not (adaptive.py's plain
windows).
"""

from __future__ import annotations

from collections import deque

from vllm_seed.gate import load_range, temperature_class

_KEPT = 8  # newest samples an N's estimate is taken from


class PlainCost:
    def __init__(self, min_samples: int = 3):
        self.min_samples = min_samples
        self.num_samples = 0
        # By temperature (to 0.1), then N: the newest plain steps' seconds, and
        # the engine step of the newest.
        self.at: dict[float, dict[int, deque[float]]] = {}
        self.measured_at: dict[float, dict[int, int]] = {}

    def add(self, num_decoding: int, seconds: float, step: int, temperature: float = 0.0) -> None:
        t = temperature_class(temperature)
        self.at.setdefault(t, {}).setdefault(num_decoding, deque(maxlen=_KEPT)).append(seconds)
        self.measured_at.setdefault(t, {})[num_decoding] = step
        self.num_samples += 1

    @property
    def ready(self) -> bool:
        """Whether it has ``min_samples`` samples, at any temperature."""
        return self.num_samples >= self.min_samples

    def predict(self, num_decoding: int, per_token: float = 0.0, temperature: float = 0.0) -> float | None:
        """Seconds of a plain step of ``num_decoding`` branches at
        ``temperature``; None until ``ready``, or with no sample at it."""
        at = self.at.get(temperature_class(temperature))
        if not self.ready or not at:
            return None
        nearest = min(at, key=lambda n: (abs(n - num_decoding), -n))
        return max(_lower_quartile(at[nearest]) + per_token * (num_decoding - nearest), 1e-6)

    def newest(self, load: int, temperature: float = 0.0) -> int | None:
        """Engine step of the newest sample in load range ``load``
        (gate.load_range) at ``temperature``; None if it has none."""
        measured = self.measured_at.get(temperature_class(temperature), {})
        return max((step for n, step in measured.items() if load_range(n) == load), default=None)


def _lower_quartile(samples) -> float:
    return sorted(samples)[len(samples) // 4]
