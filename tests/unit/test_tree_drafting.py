"""MCSD tree drafting (Drafter._draft_trees, DraftLM.forward_nodes) against transformers.

The oracle drafts the same tree with the Hugging Face model, one full forward
per parent over context + the parent's ancestor path: greedy children are its
top-k tokens, sampled children's q is its softmax(logits / T).
"""

import numpy as np
import pytest
import torch

from tests.conftest import DRAFT_DIR
from vllm_seed.draft_model import DraftLM
from vllm_seed.drafter import Drafter
from vllm_seed.messages import DraftJob
from vllm_seed.tree import ROOT, TokenTree

STORY = [0, 1039, 406, 661, 275, 260, 597, 13, 478, 454, 260, 3893, 3895, 308, 3733, 3337, 15]
CAT = [0, 313, 1669, 265, 291, 339, 264, 267, 291, 306]
ATOL = 1e-4


@pytest.fixture(scope="module")
def hf():
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(DRAFT_DIR), dtype=torch.float32)


def make_drafter() -> Drafter:
    return Drafter(str(DRAFT_DIR), max_len=128)


def hf_logits(hf, tokens: list[int]) -> torch.Tensor:
    with torch.inference_mode():
        return hf(torch.tensor([tokens])).logits[0, -1]  # [V]


def path_tokens(tree: TokenTree, tokens: list[int], node: int) -> list[int]:
    return [tokens[i] for i in tree.path(node)] if node != ROOT else []


def non_leaves(tree: TokenTree) -> list[int]:
    return [ROOT, *range(tree.level_starts[-2])]


def hf_greedy_tree(hf, tree: TokenTree, context: list[int]) -> list[int]:
    """Node i = top-rank-i token of HF logits on context + its parent's path."""
    tokens = [0] * tree.num_nodes
    for parent in non_leaves(tree):  # BFS: a parent's token is known before its children
        children = tree.children(parent)
        top = hf_logits(hf, context + path_tokens(tree, tokens, parent)).topk(len(children))
        for child, token in zip(children, top.indices.tolist()):
            tokens[child] = token
    return tokens


def tree_job(req_id, context, k_config, temperature=0.0, seed=None, replacement=False) -> DraftJob:
    return DraftJob(req_id, list(context), len(k_config), temperature, seed,
                    k_config=tuple(k_config), replacement=replacement)


def test_forward_nodes_match_transformers_and_leave_slots_alone(hf):
    lm = DraftLM(str(DRAFT_DIR), max_len=128, slots=2)
    tree, contexts = TokenTree((2, 2, 1)), [STORY, CAT]
    nodes = [[11, 12, 13, 14, 15, 16], [21, 22, 23, 24, 25, 26]]  # levels 0 and 1 of each branch
    lm.forward([0, 1], [0, 0], contexts)
    slot_k, slot_v = lm.k.clone(), lm.v.clone()
    node_kv = [None] * lm.num_layers
    for level in (0, 1):
        first, end = tree.level_starts[level], tree.level_starts[level + 1]
        ids = torch.tensor([n[first:end] for n in nodes])  # [2, M]
        pos = torch.tensor([len(c) + level for c in contexts])[:, None].expand_as(ids)
        mask = torch.from_numpy(tree.ancestor_mask(end)[first:].copy())
        logits = lm.forward_nodes([0, 1], [len(c) for c in contexts], ids, pos, node_kv, mask)
        assert logits.shape == (2, end - first, lm.vocab_size)
        for b, context in enumerate(contexts):
            for node in range(first, end):
                want = hf_logits(hf, context + path_tokens(tree, nodes[b], node))
                torch.testing.assert_close(logits[b, node - first], want, atol=ATOL, rtol=ATOL)
    assert node_kv[0][0].shape == (2, lm.num_kv_heads, 6, lm.head_dim)
    assert torch.equal(lm.k, slot_k) and torch.equal(lm.v, slot_v)  # node KV never entered a slot


@pytest.mark.parametrize("k_config", [(2, 2, 1), (3, 2, 1)])
def test_greedy_tree_nodes_are_transformers_top_k(hf, k_config):
    tree = TokenTree(k_config)
    draft = make_drafter().draft([tree_job("a", STORY, k_config)]).drafts[0]
    assert draft.num_context == len(STORY) and draft.probs is None
    assert draft.token_ids == hf_greedy_tree(hf, tree, STORY)


def test_greedy_tree_rank_zero_path_is_the_greedy_chain():
    tree = TokenTree((3, 2, 1))
    drafter = make_drafter()
    tokens = drafter.draft([tree_job("tree", CAT, tree.k_config)]).drafts[0].token_ids
    chain = drafter.draft([DraftJob("chain", CAT, 3, 0.0)]).drafts[0].token_ids
    node, path = ROOT, []
    for _ in range(tree.depth):
        node = tree.child(node, 0)
        path.append(tokens[node])
    assert path == chain


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_batched_branches_draft_as_each_alone(temperature):
    jobs = [tree_job(r, c, (2, 2, 1), temperature, seed=7) for r, c in (("a", STORY), ("b", CAT))]
    together = make_drafter().draft(jobs).drafts
    for job, draft in zip(jobs, together):
        alone = make_drafter().draft([job]).drafts[0]
        assert draft.req_id == job.req_id and draft.token_ids == alone.token_ids
        if temperature:
            np.testing.assert_allclose(draft.probs, alone.probs, atol=1e-6)


@pytest.mark.parametrize("replacement", [True, False])
def test_sampled_tree_q_rows_are_the_parents_transformers_softmax(hf, replacement):
    tree, temperature = TokenTree((3, 2, 1)), 1.0
    job = tree_job("a", STORY, tree.k_config, temperature, seed=1234, replacement=replacement)
    draft = make_drafter().draft([job]).drafts[0]
    assert draft.probs.shape == (tree.num_nodes, 4096) and draft.probs.dtype == np.float32
    np.testing.assert_allclose(draft.probs.sum(axis=1), 1.0, atol=1e-5)
    for parent in non_leaves(tree):
        children = tree.children(parent)
        logits = hf_logits(hf, STORY + path_tokens(tree, draft.token_ids, parent))
        want = torch.softmax(logits / temperature, dim=-1)  # [V]
        for child in children:
            np.testing.assert_array_equal(draft.probs[child], draft.probs[children[0]])  # shared q
            assert draft.probs[child, draft.token_ids[child]] > 0
        np.testing.assert_allclose(draft.probs[children[0]], want.numpy(), atol=1e-5)
        if not replacement:
            assert len({draft.token_ids[c] for c in children}) == len(children)
    again = make_drafter().draft([job]).drafts[0]
    assert again.token_ids == draft.token_ids
    np.testing.assert_array_equal(again.probs, draft.probs)
    other = make_drafter().draft([tree_job("a", STORY, tree.k_config, temperature, 99, replacement)])
    assert other.drafts[0].token_ids != draft.token_ids  # the seed is used


def test_rounds_after_a_tree_round_see_only_the_context(hf):
    tree, drafter = TokenTree((2, 2, 1)), make_drafter()
    first = drafter.draft([tree_job("a", STORY, tree.k_config)]).drafts[0].token_ids
    assert drafter.cached["a"] == STORY
    # Two nodes of the rank-1 subtree were accepted, then a bonus token.
    context = STORY + [first[1], first[tree.child(1, 0)], 42]
    chain = drafter.draft([DraftJob("a", context, 3, 0.0)]).drafts[0].token_ids
    assert chain == hf_greedy_tree(hf, TokenTree((1, 1, 1)), context)
    context = context + chain[:2] + [7]
    again = drafter.draft([tree_job("a", context, tree.k_config)]).drafts[0].token_ids
    assert again == hf_greedy_tree(hf, tree, context)


def test_one_call_may_mix_a_chain_and_a_tree():
    jobs = [DraftJob("chain", CAT, 3, 0.0), tree_job("tree", STORY, (2, 2, 1))]
    mixed = make_drafter().draft(jobs).drafts
    assert [d.req_id for d in mixed] == ["chain", "tree"]
    for job, draft in zip(jobs, mixed):
        assert draft.token_ids == make_drafter().draft([job]).drafts[0].token_ids
