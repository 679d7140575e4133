"""Dataclasses that cross the scheduler / drafter-actor boundary."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class DraftJob:
    req_id: str
    token_ids: list[int]  # the branch's whole context: prompt + output so far
    num_draft: int  # draft length L for this round
    temperature: float  # 0 = greedy (argmax draft, no q)
    seed: int | None = None  # per-request seed: drafts are reproducible


@dataclass
class Draft:
    req_id: str
    num_context: int  # len(job.token_ids): valid only while the branch has this length
    token_ids: list[int]  # [L]
    probs: np.ndarray | None  # [L, V] float32 q each token was sampled from; None if greedy


@dataclass
class DraftBatch:
    """One drafter call's result: the drafts of all branches it was given."""

    drafter: int
    drafts: list[Draft]
    finished_at: float  # time.monotonic() in the actor: FCFS order of admission
    busy_s: float  # time the drafter spent on this call
