"""vLLM's own scheduler with the step log (step_log.py), nothing else: the
plain-decoding side of a step-by-step comparison with SEED. Diagnostics
only (``--scheduler-cls vllm_seed.plain_step_log.StepLoggedScheduler`` with
``SEED_STEP_LOG`` set); the benchmarks' stock rows do not use it."""

from __future__ import annotations

import time

from vllm_seed import _vllm_compat
from vllm_seed.step_log import StepLog

Scheduler = _vllm_compat.scheduler_base()


class StepLoggedScheduler(Scheduler):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.step_log = StepLog({"seed_config": None})
        self._decoding: set[str] = set()
        self._entered_at = 0.0
        self._started_at = self._ended_at = None

    def schedule(self, *args, **kwargs):
        self._entered_at = time.monotonic()
        self._decoding = {r.request_id for r in self.running if r.num_computed_tokens == r.num_tokens - 1}
        out = super().schedule(*args, **kwargs)
        self._started_at = time.monotonic()
        return out

    def update_from_output(self, scheduler_output, model_runner_output):
        entered_at = time.monotonic()
        outputs = super().update_from_output(scheduler_output, model_runner_output)
        ended_at = time.monotonic()
        self.step_log.record(
            scheduler_output, model_runner_output, self._decoding, start=self._entered_at, end=ended_at,
            wall=None if self._ended_at is None else ended_at - self._ended_at,
            forward=None if self._started_at is None else entered_at - self._started_at,
            blocked=0.0, drafting=False, shut=False, window=False,
        )
        self._ended_at = ended_at if (self.running or self.waiting) else None
        if self._ended_at is None:
            self.step_log.flush()
        return outputs
