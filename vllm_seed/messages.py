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
    k_config: tuple[int, ...] = ()  # a token tree (tree.py) of depth num_draft; () = chain
    replacement: bool = False  # sampled tree children: drawn with replacement


@dataclass
class Draft:
    req_id: str
    num_context: int  # len(job.token_ids): valid only while the branch has this length
    token_ids: list[int]  # [N]: L chain tokens, or a tree's nodes in BFS order
    probs: np.ndarray | None  # [N, V] float32 q each token was drawn from; None if greedy
    # Chains: per token, the largest probability of the draft distribution it
    # was drawn from (at T=0, the draft's softmax at T=1): what confidence
    # trimming (adaptive.py) judges it by. None for trees.
    confidence: list[float] | None = None


@dataclass
class DraftBatch:
    """One drafter call's result: the drafts of all branches it was given."""

    drafter: int
    drafts: list[Draft]
    finished_at: float  # time.monotonic() in the actor: FCFS order of admission
    busy_s: float  # time the drafter spent on this call
    submitted_at: float | None = None  # time.monotonic() of the submit; set by the pool
