"""Sampling on MCSD token trees (torch, device-agnostic): drafting children.

``draft_children`` picks the k children of one tree node from the draft's
logits at that node: greedy drafting takes the top-k distinct tokens; sampled
drafting draws k tokens from q = softmax(logits / T), with replacement or
without (sequentially: draw, remove, renormalise). Every child keeps q, the
distribution its draw started from; verification (below) re-derives the
removals from the children's order.
"""

from __future__ import annotations

import torch

_UNIFORM_MIX = 1e-6


def draft_children(
    logits: torch.Tensor,  # [V]
    k: int,
    temperature: float,
    replacement: bool,
    generator: torch.Generator | None = None,
) -> tuple[list[int], torch.Tensor | None]:
    """(k child tokens in rank order, q [V] or None when greedy)."""
    if temperature == 0:
        return logits.topk(k).indices.tolist(), None
    q = torch.softmax(logits.float() / temperature, dim=-1)  # [V]
    if not replacement and int((q > 0).sum()) < k:
        # Underflow left fewer than k drawable tokens. Any q is lossless if
        # verification sees the same q, so mix in a little of the uniform.
        q = (1 - _UNIFORM_MIX) * q + _UNIFORM_MIX / q.numel()
    tokens = torch.multinomial(q, k, replacement=replacement, generator=generator)
    return tokens.tolist(), q
