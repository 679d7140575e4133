"""MCSD tree verification: greedy walks and forced outcomes by hand; losslessness
at T > 0 as a goodness-of-fit test on a toy vocabulary, which a broken residual
or a rejected sibling left in q fails; chains against standard speculative
sampling (the reference oracle)."""

import functools
import itertools

import pytest
import torch
from scipy.stats import chisquare

from vllm_seed import tree_sampling
from vllm_seed.tree import ROOT, TokenTree
from vllm_seed.tree_sampling import draft_children, residual, verify_tree, verify_tree_greedy, without

ALPHA = 1e-3
V = 6  # toy vocabulary
TRIALS = 2000  # per case; the broken updates fail with p < 1e-20 at this count


# --- greedy target -------------------------------------------------------------

TOKENS_221 = [10, 11, 20, 21, 22, 23, 30, 31, 32, 33]  # (2, 2, 1): levels 0-1 | 2-5 | 6-9


def greedy_argmax(**after):
    """target_argmax for (2, 2, 1): ``root=``, ``n5=`` ... set the argmax after them, others 0."""
    out = [0] * 11
    for name, token in after.items():
        out[0 if name == "root" else 1 + int(name[1:])] = token
    return out


def test_greedy_accepts_rank_1_and_the_full_path_then_a_bonus_token():
    argmax = greedy_argmax(root=11, n1=23, n5=33, n9=40)  # node 1 (rank 1), its child 5, its child 9
    assert verify_tree_greedy(TokenTree((2, 2, 1)), 10, TOKENS_221, argmax) == ([1, 5, 9], 40)


def test_greedy_stops_where_no_child_matches():
    tree = TokenTree((2, 2, 1))
    assert verify_tree_greedy(tree, 10, TOKENS_221, greedy_argmax(root=11, n1=23, n5=99)) == ([1, 5], 99)
    assert verify_tree_greedy(tree, 10, TOKENS_221, greedy_argmax(root=7, n0=20)) == ([], 7)


def test_greedy_walk_in_a_truncated_prefix_stops_at_the_last_present_level():
    tree, argmax = TokenTree((2, 2, 1)), greedy_argmax(root=11, n1=23, n4=32)
    # 5 nodes: node 1's only present child is 4 (token 22), so the argmax 23 after node 1 is recovered.
    assert verify_tree_greedy(tree, 5, TOKENS_221[:5], argmax[:6]) == ([1], 23)
    # 3 nodes: node 1 has no present child, so the argmax after it is a bonus token.
    assert verify_tree_greedy(tree, 3, TOKENS_221[:3], argmax[:4]) == ([1], 23)
    assert verify_tree_greedy(tree, 0, [], argmax[:1]) == ([], 11)


# --- sampled target: outcomes forced by the distributions ------------------------

def one_hot(token):
    return torch.nn.functional.one_hot(torch.tensor(token), V).double()


def test_target_equal_to_draft_accepts_rank_0_down_to_a_bonus_token():
    tree, tokens = TokenTree((2, 2, 1)), [0, 1, 2, 3, 4, 5, 5, 1, 2, 3]
    q = torch.softmax(torch.randn(10, V, generator=torch.Generator().manual_seed(0)), -1).half()  # [10, V]
    q[6] = one_hot(5)  # node 6 (child of 2) is token 5 for sure
    p = torch.stack([one_hot(5)] * 11)  # [11, V]: the target wants 5 after every other node
    p[0], p[1 + 0], p[1 + 2] = q[0], q[2], q[6]  # after the root, node 0, node 2: the children's q
    cases = [(10, [0, 2, 6]), (3, [0, 2])]  # 6 is a leaf; in the 3-node prefix, 2 has no present child
    for seed, replacement, (num_nodes, path) in itertools.product(range(5), [False, True], cases):
        target, draft = p[: num_nodes + 1].float(), q[:num_nodes]  # float32 and float16 rows
        out = verify_tree(tree, num_nodes, tokens, target, draft, replacement, torch.Generator().manual_seed(seed))
        assert out == (path, 5)  # 5 is the bonus token


@pytest.mark.parametrize("replacement", [False, True])
def test_rank_0_rejected_then_rank_1_accepted_then_all_rejected(replacement):
    tree, tokens = TokenTree((2, 2, 1)), [3, 4, 0, 1, 2, 3, 0, 0, 0, 0]
    uniform = torch.full((10, V), 1 / V)
    p = torch.stack([one_hot(0)] * 11)  # [11, V]
    # Root: p = one-hot(4) rejects node 0 (token 3, p = 0) surely; the residual is one-hot(4)
    # again and accepts node 1 (token 4) surely. After node 1, p = one-hot(5) rejects its
    # children 4 and 5 (tokens 2 and 3); 5 is the recovered token.
    p[0], p[1 + 1] = one_hot(4), one_hot(5)
    for seed in range(5):
        out = verify_tree(tree, 10, tokens, p, uniform, replacement, torch.Generator().manual_seed(seed))
        assert out == ([1], 5)


def test_duplicate_children_with_replacement_are_each_tried():
    tree, tokens = TokenTree((3,)), [2, 2, 4]
    q = torch.tensor([[0.0, 0.0, 0.5, 0.0, 0.5, 0.0]] * 3)
    # p(2) = 0 rejects both copies of 2; the residual max(0, p - q) = one-hot(4) accepts node 2.
    p = torch.stack([one_hot(4), one_hot(0), one_hot(0), one_hot(1)])  # [4, V]: 1 after node 2
    assert verify_tree(tree, 3, tokens, p, q, True, torch.Generator().manual_seed(0)) == ([2], 1)


def test_residual_and_without_exactly():
    p = torch.tensor([0.5, 0.3, 0.2, 0.0], dtype=torch.float64)
    q = torch.tensor([0.25, 0.25, 0.25, 0.25], dtype=torch.float64)
    expected = torch.tensor([5 / 6, 1 / 6, 0.0, 0.0], dtype=torch.float64)  # [0.25, 0.05, 0, 0] / 0.3
    assert torch.allclose(residual(p, q), expected, rtol=0, atol=1e-15)
    assert torch.equal(residual(p, p), p)  # nothing left: keep p
    assert torch.equal(residual(p, p + 1e-9 * torch.tensor([-1.0, 1.0, -1.0, 1.0])), p)  # rounding noise
    assert torch.equal(without(q, 1), torch.tensor([1 / 3, 0.0, 1 / 3, 1 / 3], dtype=torch.float64))
    assert torch.equal(q, torch.full((4,), 0.25, dtype=torch.float64))  # inputs untouched


def test_verify_tree_needs_draft_probs():
    with pytest.raises(ValueError, match="draft distributions"):
        verify_tree(TokenTree((2,)), 2, [0, 1], torch.full((3, V), 1 / V), None, False)


# --- sampled target: losslessness on a toy model -------------------------------

class ToyLM:
    """Next-token logits as a seeded table of the last two tokens (V stands for none)."""

    def __init__(self, seed, base=None, noise=1.0):
        g = torch.Generator().manual_seed(seed)
        self.table = torch.randn(V + 1, V + 1, V, generator=g) * 1.5  # [prev2, prev1, V]
        if base is not None:  # a draft: the target plus noise
            self.table = base.table + noise * self.table

    def logits(self, prefix):  # [V]
        return self.table[prefix[-2] if len(prefix) > 1 else V, prefix[-1]]

    def probs(self, prefixes, temperature):  # [len(prefixes), V]
        last = torch.tensor([[p[-2] if len(p) > 1 else V, p[-1]] for p in prefixes])
        return self.table_probs(temperature)[last[:, 0], last[:, 1]]

    @functools.cache
    def table_probs(self, temperature):  # [prev2, prev1, V]: one softmax per temperature
        return torch.softmax(self.table / temperature, -1)


TARGET = ToyLM(0)
DRAFT = ToyLM(1, base=TARGET, noise=1.0)


def draft_tree(context, tree, temperature, replacement, generator):
    """Every node drafted by DRAFT at its own prefix: (tokens [N], q [N, V], prefixes of root + nodes)."""
    n = tree.num_nodes
    tokens, q_rows, prefixes = [0] * n, [None] * n, {ROOT: context}
    for node in [ROOT, *range(n)]:  # BFS: parents before children
        children = tree.children(node)
        if children:
            logits = DRAFT.logits(prefixes[node])
            drawn, q = draft_children(logits, len(children), temperature, replacement, generator)
            for child, token in zip(children, drawn):
                tokens[child], q_rows[child], prefixes[child] = token, q, prefixes[node] + [token]
    return tokens, torch.stack(q_rows), [prefixes[node] for node in [ROOT, *range(n)]]


def sd_round(context, tree, temperature, replacement, generator):
    """One round: draft the tree, verify it against TARGET; returns the output tokens."""
    tokens, q, prefixes = draft_tree(context, tree, temperature, replacement, generator)
    p = TARGET.probs(prefixes, temperature)  # [N + 1, V]
    accepted, final = verify_tree(tree, tree.num_nodes, tokens, p, q, replacement, generator)
    return [tokens[i] for i in accepted] + [final]


def first_two_tokens(tree, temperature, replacement, trials=TRIALS, seed=0):
    """counts[a, b]: trials whose output began a, b (a second round where the first gave one token)."""
    generator = torch.Generator().manual_seed(seed)
    counts = torch.zeros(V, V)
    for _ in range(trials):
        out = sd_round([1], tree, temperature, replacement, generator)
        if len(out) < 2:
            out += sd_round([1] + out, tree, temperature, replacement, generator)
        counts[out[0], out[1]] += 1
    return counts


def exact_first_two(temperature):  # [V, V]: P(a, b) under TARGET after the context [1]
    p1 = torch.softmax(TARGET.logits([1]) / temperature, -1)
    return torch.stack([p1[a] * torch.softmax(TARGET.logits([1, a]) / temperature, -1) for a in range(V)])


def fit_pvalue(counts, probs, min_expected=5.0):
    """Chi-square goodness of fit; cells expecting fewer than min_expected are pooled."""
    expected, counts = (probs.double() * counts.sum()).flatten(), counts.double().flatten()
    big = expected >= min_expected
    obs = torch.cat([counts[big], counts[~big].sum()[None]])
    exp = torch.cat([expected[big], expected[~big].sum()[None]])
    keep = exp > 0
    obs, exp = obs[keep], exp[keep]
    return float(chisquare(obs.numpy(), (exp * obs.sum() / exp.sum()).numpy())[1])


def fit_pvalues(counts, temperature):
    """(first token vs the target's p after the root, first two tokens vs the target's joint)."""
    exact = exact_first_two(temperature)
    return fit_pvalue(counts.sum(1), exact.sum(1)), fit_pvalue(counts, exact)


SHARP, FLAT = 0.25, 1.0
CASES = list(itertools.product([(2, 2, 1), (3, 1)], [False, True], [SHARP, FLAT])) + [((1, 1, 1), False, FLAT)]


@pytest.mark.parametrize("k_config, replacement, temperature", CASES)
def test_tree_output_follows_the_target_distribution(k_config, replacement, temperature):
    counts = first_two_tokens(TokenTree(k_config), temperature, replacement)
    assert min(fit_pvalues(counts, temperature)) > ALPHA


@pytest.mark.parametrize("broken, replacement", [("residual", True), ("residual", False), ("without", False)])
def test_a_broken_update_fails_the_same_test(monkeypatch, broken, replacement):
    if broken == "residual":  # rejection leaves p as it was
        monkeypatch.setattr(tree_sampling, "residual", lambda p, q: p)
    else:  # the rejected sibling stays in q
        monkeypatch.setattr(tree_sampling, "without", lambda q, x: q)
    counts = first_two_tokens(TokenTree((2, 2, 1)), FLAT, replacement)
    assert max(fit_pvalues(counts, FLAT)) < ALPHA


# --- chains: the reference oracle ----------------------------------------------

def speculative_sampling(draft, p, q, generator):
    """Standard speculative sampling of a chain (Leviathan et al.), the oracle.
    draft [k] drawn from q [k, V]; p [k + 1, V]. Returns (accepted tokens, final token).
    Draws its randoms in verify_tree's order: one uniform per tried draft, one final sample."""
    for i, x in enumerate(draft):
        u = float(torch.rand((), generator=generator, dtype=torch.float64))
        if u >= min(1.0, float(p[i, x] / q[i, x])):
            r = (p[i] - q[i]).clamp_min(0)  # recovered token: from norm(max(0, p - q))
            return draft[:i], int(torch.multinomial(r / r.sum(), 1, generator=generator))
    return draft, int(torch.multinomial(p[-1], 1, generator=generator))  # bonus token


def random_chain(k, generator):
    """A k-token chain drawn from q [k, V]; p [k + 1, V] is q's logits plus noise, so that
    acceptance and rejection are both common."""
    logits = 3 * torch.randn(k + 1, V, generator=generator, dtype=torch.float64)
    q = torch.softmax(logits[:k], -1)
    p = torch.softmax(logits + 1.5 * torch.randn(k + 1, V, generator=generator, dtype=torch.float64), -1)
    draft = [int(torch.multinomial(q[i], 1, generator=generator)) for i in range(k)]
    return draft, p, q


def chain_outputs(num_nodes, draft, p, q, replacement, seed):
    """(verify_tree's, the oracle's) output tokens for the first num_nodes drafts, on equal seeds."""
    draft, p, q = draft[:num_nodes], p[: num_nodes + 1], q[:num_nodes]
    expected = speculative_sampling(draft, p, q, torch.Generator().manual_seed(seed))
    tree, generator = TokenTree((1, 1, 1)), torch.Generator().manual_seed(seed)
    accepted, final = verify_tree(tree, num_nodes, draft, p, q, replacement, generator)
    assert accepted == list(range(len(accepted)))  # a chain's walk accepts a prefix
    return ([draft[i] for i in accepted], final), expected


@pytest.mark.parametrize("replacement", [False, True])
def test_chain_equals_standard_speculative_sampling(replacement):
    generator, outcomes = torch.Generator().manual_seed(0), set()
    for case in range(300):
        num_nodes = [3, 3, 2, 1, 0][case % 5]  # full chains of 3 and truncated prefixes
        draft, p, q = random_chain(3, generator)
        seed = int(torch.randint(2**62, (), generator=generator))
        actual, expected = chain_outputs(num_nodes, draft, p, q, replacement, seed)
        assert actual == expected
        outcomes.add((num_nodes, len(actual[0])))
    assert outcomes >= {(3, 0), (3, 1), (3, 2), (3, 3)}  # every outcome of a full chain occurred


# --- drafting -------------------------------------------------------------------

def test_draft_children_greedy_is_top_k_and_sampled_keeps_q():
    logits = torch.tensor([0.1, 3.0, -1.0, 2.0, 0.5, 2.5])
    assert draft_children(logits, 3, 0.0, False) == ([1, 5, 3], None)
    tokens, q = draft_children(logits, 4, 1.0, False, torch.Generator().manual_seed(0))
    assert len(set(tokens)) == 4 and torch.allclose(q, torch.softmax(logits, -1))
    # Underflow leaves one drawable token: q is mixed with a little uniform so k distinct draws exist.
    tokens, q = draft_children(torch.tensor([0.0, -1e4, -1e4]), 3, 0.2, False)
    assert sorted(tokens) == [0, 1, 2] and bool((q > 0).all())
