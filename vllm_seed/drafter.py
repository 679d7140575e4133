"""Drafter: a plain class that drafts for the branches assigned to it.

It keeps a KV slot per branch, prefills only the tokens it has not seen (the
common prefix of what it cached and the branch's new context is reused), and
drafts all branches of a job list as one batch: L batched forwards per round.
Made a Ray actor only where the pool creates it (drafter_pool.py).
"""

from __future__ import annotations

import os
import time

import numpy as np
import torch

from vllm_seed.messages import Draft, DraftBatch, DraftJob


class Drafter:
    def __init__(
        self, model_dir: str, max_len: int, index: int = 0, num_threads: int = 1,
        cpus: tuple[int, ...] = (),
    ):
        if cpus:
            os.sched_setaffinity(0, cpus)
        torch.set_num_threads(num_threads)
        # Trained small drafts produce denormal activations, which are slow
        # on these CPUs (a scratch timing, not a benchmark, showed it).
        torch.set_flush_denormal(True)
        from vllm_seed.draft_model import DraftLM

        self.index = index
        self.lm = DraftLM(model_dir, max_len=max_len)
        self.slot_of: dict[str, int] = {}
        self.cached: dict[str, list[int]] = {}  # tokens whose KV is in the slot
        self.free_slots: list[int] = list(range(self.lm.num_slots))

    def ping(self) -> int:
        return self.index

    def vocab_size(self) -> int:
        return self.lm.vocab_size

    def free(self, req_ids: list[str]) -> None:
        for req_id in req_ids:
            slot = self.slot_of.pop(req_id, None)
            if slot is not None:
                self.free_slots.append(slot)
                del self.cached[req_id]

    def draft(self, jobs: list[DraftJob]) -> DraftBatch:
        start = time.monotonic()
        slots = [self._slot(job.req_id) for job in jobs]
        reused = [self._reuse(job) for job in jobs]
        feed = [job.token_ids[n:] for job, n in zip(jobs, reused)]
        drafted = [[] for _ in jobs]
        probs = [[] for _ in jobs]
        cached = list(reused)
        for step in range(max(job.num_draft for job in jobs)):
            logits = self.lm.forward(slots, cached, feed)  # [B, V]
            cached = [c + len(f) for c, f in zip(cached, feed)]
            feed = []
            for b, job in enumerate(jobs):
                token, q = _sample(logits[b], job, step)
                drafted[b].append(token)
                probs[b].append(q)
                feed.append([token])
        for job, toks in zip(jobs, drafted):
            # The last draft token was never fed: its KV is not in the slot.
            self.cached[job.req_id] = list(job.token_ids) + toks[: job.num_draft - 1]
        drafts = [
            Draft(job.req_id, len(job.token_ids), toks[: job.num_draft],
                  None if job.temperature == 0 else np.stack(qs[: job.num_draft]))
            for job, toks, qs in zip(jobs, drafted, probs)
        ]
        end = time.monotonic()
        return DraftBatch(self.index, drafts, end, end - start)

    def _slot(self, req_id: str) -> int:
        if req_id not in self.slot_of:
            if not self.free_slots:
                old = self.lm.num_slots
                self.lm.grow(old + 1)
                self.free_slots.extend(range(old, self.lm.num_slots))
            self.slot_of[req_id] = self.free_slots.pop(0)
            self.cached[req_id] = []
        return self.slot_of[req_id]

    def _reuse(self, job: DraftJob) -> int:
        """Cached tokens still valid for this context (at least one token is fed)."""
        old = self.cached[job.req_id]
        n = 0
        limit = min(len(old), len(job.token_ids) - 1)
        while n < limit and old[n] == job.token_ids[n]:
            n += 1
        return n


def _sample(logits: torch.Tensor, job: DraftJob, step: int) -> tuple[int, np.ndarray | None]:
    if job.temperature == 0:
        return int(logits.argmax()), None
    q = torch.softmax(logits / job.temperature, dim=-1)  # [V]
    generator = None
    if job.seed is not None:
        generator = torch.Generator().manual_seed(
            hash((job.seed, len(job.token_ids), step)) & 0x7FFFFFFF
        )
    token = int(torch.multinomial(q, 1, generator=generator))
    return token, q.numpy()
