"""Sampling on MCSD token trees (torch, device-agnostic): drafting and verifying.

Drafting. ``draft_children`` picks the k children of one tree node from the
draft's logits at that node: greedy drafting takes the top-k distinct tokens;
sampled drafting draws k tokens from q = softmax(logits / T), with replacement
or without (sequentially: draw, remove, renormalise). Every child keeps q, the
distribution its draw started from; verification re-derives the removals from
the children's rank order. Any q is lossless as long as the walk sees the same
q the draws used.

Verifying (the acceptance walk). Vocabulary as in vLLM's rejection sampler:

- **accepted** tokens: draft nodes the walk keeps, one per level, each a
  child of the previous one (the first a child of the root);
- **recovered** token: drawn from the residual target where the walk stops
  because every present child of the node (the root if nothing was accepted)
  was rejected;
- **bonus** token: drawn from the target where the walk stops because the node
  has no present child (a leaf, or its children fell outside a truncated BFS
  prefix of ``num_nodes`` nodes);
- **output** tokens: the accepted tokens, then one recovered or bonus token.

At a node with target p and its children x_1..x_k (drawn from q), the walk
tries x_i in rank order: accept with probability min(1, p(x_i) / q(x_i));
on rejection p <- norm(max(0, p - q)) and, for draws without replacement,
q loses x_i (as the next draw did). The output follows the target exactly.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from vllm_seed.tree import ROOT, TokenTree

_UNIFORM_MIX = 1e-6


def draft_children(
    logits: torch.Tensor,  # [V], or [P, V]: P parents at once
    k: int,
    temperature: float,
    replacement: bool,
    generator: torch.Generator | None = None,
) -> tuple[list, torch.Tensor | None]:
    """(k child tokens in rank order, q [V] or None when greedy); for [P, V]
    logits, a list of P such token lists and q [P, V]."""
    if temperature == 0:
        return logits.topk(k).indices.tolist(), None
    q = torch.softmax(logits.float() / temperature, dim=-1)  # [..., V]
    short = (q > 0).sum(dim=-1, keepdim=True) < k
    if not replacement and bool(short.any()):
        # Underflow left fewer than k drawable tokens. Any q is lossless if
        # verification sees the same q, so mix in a little of the uniform.
        q = torch.where(short, (1 - _UNIFORM_MIX) * q + _UNIFORM_MIX / q.shape[-1], q)
    tokens = torch.multinomial(q, k, replacement=replacement, generator=generator)
    return tokens.tolist(), q


def verify_tree_greedy(
    tree: TokenTree, num_nodes: int, tokens: Sequence[int], target_argmax: Sequence[int]
) -> tuple[list[int], int]:
    """Greedy target: at each node accept the present child (rank order) whose
    token is the target's argmax there; stop where none is.

    ``tokens[i]``: node i's token (the first ``num_nodes`` BFS nodes are present).
    ``target_argmax[0]``: the target's argmax after the root; ``[1 + i]``: after node i.
    Returns (accepted nodes along the path, final token = the argmax at the last
    node reached: recovered if its children were all rejected, else bonus)."""
    accepted, node = [], ROOT
    while True:
        want = int(target_argmax[node + 1])
        match = next((c for c in tree.children(node, num_nodes) if int(tokens[c]) == want), None)
        if match is None:
            return accepted, want
        accepted.append(match)
        node = match


def verify_tree(
    tree: TokenTree,
    num_nodes: int,
    tokens: Sequence[int],
    target_probs: torch.Tensor,  # [num_nodes + 1, V]: row 0 after the root, row 1 + i after node i
    draft_probs: torch.Tensor,  # [num_nodes, V]: row i is the q node i was drawn from
    replacement: bool,
    generator: torch.Generator | None = None,
) -> tuple[list[int], int]:
    """Sampled target, MCSD rule: at each node try the present children in rank
    order (``_accept_child``); descend into the accepted one, whose target row
    is the next p and whose children's draft row the next q. Where no child is
    accepted, the final token is drawn from p: the residual (recovered token)
    or, with no present child, the target row itself (bonus token).
    Returns (accepted nodes along the path, final token)."""
    if draft_probs is None:
        raise ValueError("verify_tree needs the draft distributions of a sampled tree draft")
    accepted, node = [], ROOT
    while True:
        p = target_probs[node + 1].to(torch.float64)  # [V]
        child, p = _accept_child(tree.children(node, num_nodes), tokens, p, draft_probs, replacement, generator)
        if child is None:
            return accepted, _sample(p, generator)
        accepted.append(child)
        node = child


def _accept_child(children, tokens, p, draft_probs, replacement, generator):
    """Siblings in rank order: (the accepted child, p) or (None, the residual p)."""
    if not children:
        return None, p
    q = draft_probs[children[0]].to(p.device, torch.float64)  # [V]: the siblings' first draw
    for child in children:
        x = int(tokens[child])
        if _uniform(generator, p.device) * q[x] < p[x]:  # u < p(x) / q(x)
            return child, p
        p = residual(p, q)
        if not replacement:
            q = without(q, x)  # the next sibling was drawn without x
    return None, p


# A residual with less mass than this is rounding noise of p == q; rejection
# had at most this probability, so keeping p changes the output by at most it.
_EMPTY_RESIDUAL = 1e-6


def residual(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """norm(max(0, p - q)): the target given that a draw from q was rejected;
    p itself when nothing is left (rejection had probability ~0)."""
    r = (p - q).clamp_min(0)  # [V]
    total = r.sum()
    return p if total <= _EMPTY_RESIDUAL else r / total


def without(q: torch.Tensor, x: int) -> torch.Tensor:
    """q with token x removed and renormalised: the next draw without replacement."""
    q = q.clone()
    q[x] = 0
    total = q.sum()
    return q if total <= 0 else q / total


def _uniform(generator: torch.Generator | None, device: torch.device) -> float:
    device = device if generator is None else generator.device
    return float(torch.rand((), generator=generator, device=device, dtype=torch.float64))


def _sample(p: torch.Tensor, generator: torch.Generator | None) -> int:
    device = p.device if generator is None else generator.device
    return int(torch.multinomial(p.to(device), 1, generator=generator))
