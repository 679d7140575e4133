"""Tree drafting (Drafter + DraftLM.forward_nodes) against transformers, node by node."""

import pytest
import torch

from tests.conftest import DRAFT_DIR
from vllm_seed.messages import DraftJob
from vllm_seed.tree import TokenTree

CONTEXTS = [[5, 17, 33, 100, 7, 9], [3, 44, 21]]


@pytest.fixture(scope="module")
def hf():
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(DRAFT_DIR, dtype=torch.float32)


@pytest.fixture(scope="module")
def drafter():
    from vllm_seed.drafter import Drafter

    return Drafter(str(DRAFT_DIR), 512)


def hf_logits(hf, tokens):
    with torch.no_grad():
        return hf(torch.tensor([tokens])).logits[0, -1]


def node_prefix(tree, context, tokens, node):
    return context + [tokens[a] for a in tree.path(node)[:-1]]


@pytest.mark.parametrize("k_config", [(2, 2, 1), (3, 2, 1)])
def test_greedy_tree_node_is_the_top_ranked_token_after_its_path(hf, drafter, k_config):
    tree = TokenTree(k_config)
    jobs = [DraftJob(f"g{i}{k_config}", c, 3, 0.0, k_config=k_config) for i, c in enumerate(CONTEXTS)]
    drafts = drafter.draft(jobs).drafts  # both branches in one batch
    for job, draft in zip(jobs, drafts):
        assert len(draft.token_ids) == tree.num_nodes and draft.probs is None
        for node in range(tree.num_nodes):
            rank = node - tree.child(tree.parent[node], 0)
            top = hf_logits(hf, node_prefix(tree, job.token_ids, draft.token_ids, node)).topk(rank + 1).indices
            assert draft.token_ids[node] == int(top[rank])
    alone = drafter.draft([DraftJob("alone", CONTEXTS[1], 3, 0.0, k_config=k_config)]).drafts[0]
    assert alone.token_ids == drafts[1].token_ids
    chain = drafter.draft([DraftJob("chain", CONTEXTS[1], 3, 0.0)]).drafts[0]
    assert [alone.token_ids[n] for n in tree.path(tree.level_starts[-2])] == chain.token_ids  # rank-0 path


@pytest.mark.parametrize("replacement", [False, True])
def test_sampled_tree_keeps_each_nodes_q(hf, drafter, replacement):
    tree = TokenTree((3, 2, 1))
    job = DraftJob("s", CONTEXTS[0], 3, 1.0, seed=7, k_config=(3, 2, 1), replacement=replacement)
    draft = drafter.draft([job]).drafts[0]
    assert draft.probs.shape == (tree.num_nodes, drafter.lm.vocab_size)
    for node in range(tree.num_nodes):
        expected = torch.softmax(hf_logits(hf, node_prefix(tree, job.token_ids, draft.token_ids, node)), -1)
        torch.testing.assert_close(torch.from_numpy(draft.probs[node]), expected, atol=1e-5, rtol=1e-4)
    if not replacement:
        for parent in (-1, *range(tree.num_nodes)):
            children = tree.children(parent)
            assert len({draft.token_ids[c] for c in children}) == len(children)
    again = drafter.draft([job]).drafts[0]
    assert again.token_ids == draft.token_ids  # same seed, same draft


def test_tree_nodes_do_not_pollute_the_branchs_slot(hf, drafter):
    context = list(CONTEXTS[0])
    drafter.draft([DraftJob("p", context, 3, 0.0, k_config=(2, 2, 1))])
    longer = context + [42, 8]
    draft = drafter.draft([DraftJob("p", longer, 3, 0.0)]).drafts[0]
    expected = []
    for _ in range(3):
        expected.append(int(hf_logits(hf, longer + expected).argmax()))
    assert draft.token_ids == expected
