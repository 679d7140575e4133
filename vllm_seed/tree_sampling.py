"""Sampling on MCSD token trees (torch, device-agnostic): drafting children.

``draft_children`` picks the k children of one tree node from the draft's
logits at that node: greedy drafting takes the top-k distinct tokens; sampled
drafting draws k tokens from q = softmax(logits / T), with replacement or
without (sequentially: draw, remove, renormalise). Every child keeps q, the
distribution its draw started from; verification (below) re-derives the
removals from the children's order. Any q is lossless as long as the walk
sees the same q the draws used.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from vllm_seed.tree import ROOT, TokenTree

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


# --- verification: the MCSD acceptance walk ----------------------------------
#
# Vocabulary as in vLLM's rejection sampler: *accepted* tokens are draft nodes
# the walk keeps; the walk ends with one more token, *recovered* (sampled from
# the residual after every present child of the last node was rejected) or
# *bonus* (sampled from the target when the last node has no present child).


def verify_tree_greedy(
    tree: TokenTree, num_nodes: int, tokens: Sequence[int], target_argmax: Sequence[int]
) -> tuple[list[int], int]:
    """Greedy target: descend into the child equal to the target's argmax.

    ``target_argmax[0]`` is the argmax after the root, ``[1 + i]`` after node i.
    Returns (accepted nodes, final token = the argmax where the walk stopped)."""
    accepted, node = [], ROOT
    while True:
        want = target_argmax[node + 1]
        match = next((c for c in tree.children(node, num_nodes) if tokens[c] == want), None)
        if match is None:
            return accepted, int(want)
        accepted.append(match)
        node = match


def verify_tree(
    tree: TokenTree,
    num_nodes: int,
    tokens: Sequence[int],
    target_probs: torch.Tensor,  # [num_nodes + 1, V]: row 0 after the root, 1 + i after node i
    draft_probs: torch.Tensor,  # [num_nodes, V]: row i is the q node i was drawn from
    replacement: bool,
    generator: torch.Generator | None = None,
) -> tuple[list[int], int]:
    """Sampled target, MCSD rule (children tried in rank order at each node):
    accept x with probability min(1, p(x) / q(x)); on rejection p <- residual,
    and without replacement q loses x. Returns (accepted nodes, final token)."""
    if draft_probs is None:
        raise ValueError("verify_tree needs the draft distributions of a sampled tree draft")
    accepted, node = [], ROOT
    while True:
        p = target_probs[node + 1].double()  # [V]
        children = tree.children(node, num_nodes)
        q = draft_probs[children[0]].double() if children else None
        for child in children:
            x = tokens[child]
            if _uniform(generator, p.device) * q[x] < p[x]:  # u < p(x) / q(x)
                break
            p = residual(p, q)
            if not replacement:
                q = without(q, x)
        else:  # no child accepted (or none present): recovered / bonus token
            return accepted, int(torch.multinomial(p.float(), 1, generator=generator))
        accepted.append(child)
        node = child


def residual(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """norm(max(0, p - q)); p itself if nothing is left (rejection had probability 0)."""
    r = (p - q).clamp_min(0)
    total = r.sum()
    return p if total <= 0 else r / total


def without(q: torch.Tensor, x: int) -> torch.Tensor:
    """q with token x removed and renormalised (the next sibling's draw)."""
    q = q.clone()
    q[x] = 0
    total = q.sum()
    return q if total <= 0 else q / total


def _uniform(generator, device) -> torch.Tensor:
    return torch.rand((), generator=generator, device=device, dtype=torch.float64)
