"""StepLog: one JSON line per engine step, for accounting where time goes.

Off unless ``SEED_STEP_LOG`` names a directory; then each engine core
writes ``steps-<pid>.jsonl`` there: a header line with the SEED config,
then per engine step

    start, end  when the scheduler began it and when it ended (monotonic seconds)
    wall    since the previous step's end (null after the engine idled)
    forward the executor's time (target forward, sampling, verification)
    blocked time the scheduler waited on drafts with no runnable branch
    held    branches held back for their drafts, by why they wait
            (``SeedScheduler._held_reasons``)
    decoding branches decoding when it was scheduled
    reqs    requests scheduled
    tokens  tokens scheduled; ``prefill`` of them prompt tokens
    spec    draft tokens verified, in ``drafts`` drafts
    emitted tokens the step's requests emitted
    drafting whether a draft was in flight at the step's end
    shut    whether the step's gate was shut; ``window`` a plain window
    gate_gain, gate_z  the step's gate's gain and its z (gate.py), after the step
    plain_s plain decoding's predicted step time at ``decoding`` (adaptive.py)

``benchmarks/step_log_report.py`` sums the lines by kind of step. Lines are
buffered and written every ``FLUSH_EVERY`` steps and when the engine idles.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable

from vllm_seed.step_meter import emitted_tokens

STEP_LOG_ENV = "SEED_STEP_LOG"
FLUSH_EVERY = 256


class StepLog:
    def __init__(self, header: dict, directory: str | None = None):
        directory = directory if directory is not None else os.environ.get(STEP_LOG_ENV)
        self.path = None if not directory else os.path.join(directory, f"steps-{os.getpid()}.jsonl")
        self.lines: list[str] = []
        if self.path:
            os.makedirs(directory, exist_ok=True)
            self.lines.append(json.dumps({"header": header}))

    def record(self, out, runner_out, decoding: Iterable[str], **fields) -> None:
        """The step that ``out`` scheduled and ``runner_out`` ran, with
        ``decoding`` the requests that were decoding (the rest prefilled);
        ``fields`` the scheduler's own measurements (module docstring)."""
        if self.path is None:
            return
        spec, decoding = out.scheduled_spec_decode_tokens, set(decoding)
        self.lines.append(json.dumps({
            **{k: round(v, 6) if isinstance(v, float) else v for k, v in fields.items()},
            "decoding": len(decoding),
            "reqs": len(out.num_scheduled_tokens),
            "tokens": out.total_num_scheduled_tokens,
            "prefill": sum(n for rid, n in out.num_scheduled_tokens.items() if rid not in decoding),
            "spec": sum(len(t) for t in spec.values()),
            "drafts": sum(1 for t in spec.values() if t),
            "emitted": emitted_tokens(out, runner_out),
        }))
        if len(self.lines) >= FLUSH_EVERY:
            self.flush()

    def flush(self) -> None:
        if self.path and self.lines:
            with open(self.path, "a") as f:
                f.write("\n".join(self.lines) + "\n")
            self.lines = []
