"""MCSD tree verification: greedy walks by hand, and losslessness at T > 0 as a
goodness-of-fit test on a toy vocabulary, which a broken residual fails."""

import itertools

import pytest
import torch
from scipy.stats import chisquare

from vllm_seed import tree_sampling
from vllm_seed.tree import TokenTree
from vllm_seed.tree_sampling import draft_children, verify_tree, verify_tree_greedy

ALPHA = 1e-3
V = 6  # toy vocabulary


def test_greedy_walk_takes_the_matching_child_at_each_level():
    tree = TokenTree((2, 2, 1))
    tokens = [10, 11, 20, 21, 22, 23, 30, 31, 32, 33]
    # After the root the target wants 11 (node 1, rank 1), then 23 (node 5), then 33 (node 9), then 40.
    argmax = [11] + [0] * 10
    argmax[1 + 1], argmax[1 + 5], argmax[1 + 9] = 23, 33, 40
    assert verify_tree_greedy(tree, 10, tokens, argmax) == ([1, 5, 9], 40)  # bonus after a leaf
    argmax[1 + 5] = 99
    assert verify_tree_greedy(tree, 10, tokens, argmax) == ([1, 5], 99)  # leaf rejected
    assert verify_tree_greedy(tree, 10, tokens, [7] + argmax[1:]) == ([], 7)  # nothing matched
    # Truncated to 5 nodes: node 1's children are 4 only, so the walk stops at 1.
    assert verify_tree_greedy(tree, 5, tokens[:5], argmax[:6]) == ([1], 23)


class ToyLM:
    """Next-token logits as a seeded table of the last two tokens."""

    def __init__(self, seed, base=None, noise=1.0):
        g = torch.Generator().manual_seed(seed)
        self.table = torch.randn(V + 1, V + 1, V, generator=g) * 1.5
        if base is not None:  # a draft: the target plus noise
            self.table = base.table + noise * self.table

    def logits(self, prefix):
        return self.table[prefix[-2] if len(prefix) > 1 else V, prefix[-1]]


TARGET = ToyLM(0)
DRAFT = ToyLM(1, base=TARGET, noise=1.0)


def sd_round(context, tree, temperature, replacement, generator):
    """One SEED round: draft the tree, verify it; returns the emitted tokens."""
    tokens, probs, prefixes = [], [], []
    for node in range(tree.num_nodes):
        parent = tree.parent[node]
        prefix = context if parent < 0 else prefixes[parent]
        if node == 0 or tree.parent[node - 1] != parent:  # first child: draw all siblings
            k = tree.k_config[tree.level[node]]
            siblings, q = draft_children(DRAFT.logits(prefix), k, temperature, replacement, generator)
        tokens.append(siblings[len(tokens) - tree.child(parent, 0)])
        probs.append(q)
        prefixes.append(prefix + [tokens[-1]])
    rows = [context] + prefixes
    target = torch.stack([torch.softmax(TARGET.logits(r) / temperature, -1) for r in rows])
    accepted, final = verify_tree(tree, tree.num_nodes, tokens, target, torch.stack(probs), replacement, generator)
    return [tokens[i] for i in accepted] + [final]


def first_two_tokens(tree, temperature, replacement, trials, seed=0):
    generator = torch.Generator().manual_seed(seed)
    counts = torch.zeros(V, V)
    for _ in range(trials):
        out = sd_round([1], tree, temperature, replacement, generator)
        if len(out) < 2:
            out += sd_round([1] + out, tree, temperature, replacement, generator)
        counts[out[0], out[1]] += 1
    return counts


def exact_first_two(temperature):
    p1 = torch.softmax(TARGET.logits([1]) / temperature, -1)
    return torch.stack([p1[a] * torch.softmax(TARGET.logits([1, a]) / temperature, -1) for a in range(V)])


def fit_pvalue(counts, probs, min_expected=5.0):
    expected = (probs * counts.sum()).flatten()
    counts = counts.flatten()
    big = expected >= min_expected
    obs = torch.cat([counts[big], counts[~big].sum()[None]])
    exp = torch.cat([expected[big], expected[~big].sum()[None]])
    keep = exp > 0
    return float(chisquare(obs[keep].numpy(), exp[keep].numpy() * obs[keep].sum().item() / exp[keep].sum().item())[1])


CASES = list(itertools.product([(2, 2, 1), (3, 1)], [False, True], [0.3, 1.0])) + [((1, 1, 1), False, 1.0)]


@pytest.mark.parametrize("k_config, replacement, temperature", CASES)
def test_tree_output_follows_the_target_distribution(k_config, replacement, temperature):
    counts = first_two_tokens(TokenTree(k_config), temperature, replacement, trials=2500)
    assert fit_pvalue(counts, exact_first_two(temperature)) > ALPHA


@pytest.mark.parametrize("broken, replacement", [("residual", True), ("residual", False), ("without", False)])
def test_a_broken_update_fails_the_same_test(monkeypatch, broken, replacement):
    if broken == "residual":  # rejection leaves p as it was
        monkeypatch.setattr(tree_sampling, "residual", lambda p, q: p)
    else:  # the rejected sibling stays in q
        monkeypatch.setattr(tree_sampling, "without", lambda q, x: q)
    counts = first_two_tokens(TokenTree((2, 2, 1)), 1.0, replacement, trials=2500)
    assert fit_pvalue(counts, exact_first_two(1.0)) < ALPHA


def test_draft_children_greedy_is_top_k_and_sampled_keeps_q():
    logits = torch.tensor([0.1, 3.0, -1.0, 2.0, 0.5, 2.5])
    assert draft_children(logits, 3, 0.0, False) == ([1, 5, 3], None)
    tokens, q = draft_children(logits, 4, 1.0, False, torch.Generator().manual_seed(0))
    assert len(set(tokens)) == 4 and torch.allclose(q, torch.softmax(logits, -1))
    # Underflow leaves one drawable token: q is mixed with a little uniform so k distinct draws exist.
    tokens, q = draft_children(torch.tensor([0.0, -1e4, -1e4]), 3, 0.2, False)
    assert sorted(tokens) == [0, 1, 2] and bool((q > 0).all())
