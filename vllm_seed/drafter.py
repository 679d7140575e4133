"""Drafter: a plain class that drafts for the branches assigned to it.

It keeps a KV slot per branch, prefills only the tokens it has not seen (the
common prefix of what it cached and the branch's new context is reused), and
drafts all branches of a job list as one batch: L batched forwards per round.
A token tree (``k_config``, tree.py) is drafted level by level, one batched
forward per level; its nodes' KV is kept outside the slot (siblings share
positions), so after a tree round the slot holds the context only.
Made a Ray actor only where the pool creates it (drafter_pool.py).
"""

from __future__ import annotations

import os
import time

import numpy as np
import torch

from vllm_seed.messages import Draft, DraftBatch, DraftJob
from vllm_seed.tree import TokenTree, token_tree
from vllm_seed.tree_sampling import draft_children


class Drafter:
    def __init__(
        self, model_dir: str, max_len: int, index: int = 0, num_threads: int = 1,
        cpus: tuple[int, ...] = (), head: str = "float32",
    ):
        if cpus:
            os.sched_setaffinity(0, cpus)
        torch.set_num_threads(num_threads)
        # Trained small drafts produce denormal activations, which are slow
        # on these CPUs (a scratch timing, not a benchmark, showed it).
        torch.set_flush_denormal(True)
        from vllm_seed.draft_model import DraftLM

        self.index = index
        self.lm = DraftLM(model_dir, max_len=max_len, head=head)
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
        """Each job's draft, in job order; a job of ``num_draft`` 0 only
        prefills its context (a *warm* job, scheduler.py) and has none."""
        start = time.monotonic()
        drafting = [job for job in jobs if job.num_draft]
        warm = [job for job in jobs if not job.num_draft]
        if warm:
            self._prefill(warm, [self._slot(job.req_id) for job in warm])
        drafts: dict[str, Draft] = {}
        for tree, group in _group_by_tree(drafting).items():  # one group in practice: one k_config
            out = self._draft_chains(group) if tree is None else self._draft_trees(group, tree)
            drafts.update((d.req_id, d) for d in out)
        end = time.monotonic()
        return DraftBatch(self.index, [drafts[job.req_id] for job in drafting], end, end - start)

    def _draft_chains(self, jobs: list[DraftJob]) -> list[Draft]:
        slots = [self._slot(job.req_id) for job in jobs]
        reused = [self._reuse(job) for job in jobs]
        feed = [job.token_ids[n:] for job, n in zip(jobs, reused)]
        drafted = [[] for _ in jobs]
        probs = [[] for _ in jobs]
        confidence = [[] for _ in jobs]
        cached = list(reused)
        active = list(range(len(jobs)))  # branches still drafting: lengths may differ
        for step in range(max(job.num_draft for job in jobs)):
            logits = self.lm.forward([slots[b] for b in active], [cached[b] for b in active], feed)
            for b, fed in zip(active, feed):
                cached[b] += len(fed)
            feed, still = [], []
            greedy_conf = _greedy_confidence(logits, [jobs[b] for b in active])
            for row, b in enumerate(active):
                token, q = _sample(logits[row], jobs[b], step)
                drafted[b].append(token)
                probs[b].append(q)
                confidence[b].append(float(q.max()) if q is not None else float(greedy_conf[row]))
                if step + 1 < jobs[b].num_draft:
                    still.append(b)
                    feed.append([token])
            active = still
        for job, toks in zip(jobs, drafted):
            # The last draft token was never fed: its KV is not in the slot.
            self.cached[job.req_id] = list(job.token_ids) + toks[:-1]
        return [
            Draft(job.req_id, len(job.token_ids), toks, None if job.temperature == 0 else np.stack(qs), conf)
            for job, toks, qs, conf in zip(jobs, drafted, probs, confidence)
        ]

    def _draft_trees(self, jobs: list[DraftJob], tree: TokenTree) -> list[Draft]:
        """Level by level: one forward for all nodes of a level of all branches."""
        slots = [self._slot(job.req_id) for job in jobs]
        logits = self._prefill(jobs, slots)[:, None]  # [B, 1, V]: the root's
        tokens = [[0] * tree.num_nodes for _ in jobs]  # [B, N] in BFS order
        probs = [[None] * tree.num_nodes for _ in jobs]  # [B, N] q rows [V]
        node_kv = [None] * self.lm.num_layers
        for level in range(tree.depth):
            _draw_level(tree, level, jobs, logits, tokens, probs)
            if level + 1 < tree.depth:  # leaves are never fed
                logits = self._feed_level(tree, level, jobs, slots, tokens, node_kv)
        return [
            Draft(job.req_id, len(job.token_ids), toks,
                  None if job.temperature == 0 else torch.stack(qs).numpy())
            for job, toks, qs in zip(jobs, tokens, probs)
        ]

    def _prefill(self, jobs: list[DraftJob], slots: list[int]) -> torch.Tensor:
        """Feed each branch's uncached context into its slot; the root's logits [B, V]."""
        reused = [self._reuse(job) for job in jobs]
        logits = self.lm.forward(slots, reused, [job.token_ids[n:] for job, n in zip(jobs, reused)])
        for job in jobs:  # a tree round leaves only the context in the slot
            self.cached[job.req_id] = list(job.token_ids)
        return logits

    def _feed_level(self, tree, level, jobs, slots, tokens, node_kv) -> torch.Tensor:
        """Run the level's nodes of all branches (KV into node_kv); their logits [B, M, V]."""
        first, end = tree.level_starts[level], tree.level_starts[level + 1]
        ids = torch.tensor([t[first:end] for t in tokens])  # [B, M]
        context = torch.tensor([len(job.token_ids) for job in jobs])  # [B]
        pos = (context + level)[:, None].expand_as(ids)  # [B, M]: siblings share a position
        mask = torch.from_numpy(tree.ancestor_mask(end)[first:].copy())  # [M, P + M], P = first
        return self.lm.forward_nodes(slots, context.tolist(), ids, pos, node_kv, mask)

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


def _group_by_tree(jobs: list[DraftJob]) -> dict[TokenTree | None, list[DraftJob]]:
    """Jobs by token tree; None collects the chains (no k_config, or all ones)."""
    groups: dict[TokenTree | None, list[DraftJob]] = {}
    for job in jobs:
        tree = token_tree(tuple(job.k_config)) if job.k_config else None
        groups.setdefault(None if tree is None or tree.is_chain else tree, []).append(job)
    return groups


def _draw_level(tree: TokenTree, level: int, jobs, logits, tokens, probs) -> None:
    """Draw the level's nodes: the children of each node one level up (the root for 0).

    ``logits`` [B, parents, V]: row j is the j-th parent of the level. Writes
    each child's token and its parent's q into ``tokens`` / ``probs``."""
    num_parents = 1 if level == 0 else tree.level_sizes[level - 1]
    k = tree.k_config[level]
    first = tree.level_starts[level]  # children of parent j: first + j*k .. first + j*k + k-1
    for b, job in enumerate(jobs):  # all parents of a branch in one draw
        picked, q = draft_children(logits[b], k, job.temperature, job.replacement,
                                   _generator(job, -2 - level))  # [P][k], q [P, V]
        for j in range(num_parents):
            for rank, token in enumerate(picked[j]):
                tokens[b][first + j * k + rank] = token
                probs[b][first + j * k + rank] = None if q is None else q[j]


def _generator(job: DraftJob, salt: int) -> torch.Generator | None:
    """Seeded by (request seed, context length, salt): chain step >= 0, tree -2 - level < 0."""
    if job.seed is None:
        return None
    return torch.Generator().manual_seed(hash((job.seed, len(job.token_ids), salt)) & 0x7FFFFFFF)


def _greedy_confidence(logits: torch.Tensor, jobs: list[DraftJob]) -> torch.Tensor | None:
    """Per row of ``logits`` [B, V], the largest probability of its softmax
    at T=1: a greedy draft token's confidence. None if no job is greedy."""
    if all(job.temperature > 0 for job in jobs):
        return None
    return torch.softmax(logits, dim=-1).amax(dim=-1)


def _sample(logits: torch.Tensor, job: DraftJob, step: int) -> tuple[int, np.ndarray | None]:
    if job.temperature == 0:
        return int(logits.argmax()), None
    q = torch.softmax(logits / job.temperature, dim=-1)  # [V]
    return draw(q, _generator(job, step)), q.numpy()


def draw(q: torch.Tensor, generator: torch.Generator | None) -> int:
    """One token from ``q`` [V] by inverting its CDF: 0.05 ms where
    ``torch.multinomial`` takes 1 ms at V = 49152, once per draft token.
    The CDF is summed in float64, as multinomial does, and a token of
    probability 0 is never drawn (its CDF step is empty)."""
    cdf = q.to(torch.float64).cumsum(0)  # [V]
    u = torch.rand(1, dtype=torch.float64, generator=generator) * cdf[-1]
    return int(torch.searchsorted(cdf, u, right=True))
