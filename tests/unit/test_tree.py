"""TokenTree shape maths, checked exhaustively against hand-written trees."""

import numpy as np
import pytest

from vllm_seed.tree import ROOT, TokenTree

# (2, 2, 1): level 0 = nodes 0-1, level 1 = 2-5, level 2 = 6-9.
MASK_221 = np.array([
    # 0  1  2  3  4  5  6  7  8  9
    [1, 0, 0, 0, 0, 0, 0, 0, 0, 0],  # 0
    [0, 1, 0, 0, 0, 0, 0, 0, 0, 0],  # 1
    [1, 0, 1, 0, 0, 0, 0, 0, 0, 0],  # 2: child of 0
    [1, 0, 0, 1, 0, 0, 0, 0, 0, 0],  # 3: child of 0
    [0, 1, 0, 0, 1, 0, 0, 0, 0, 0],  # 4: child of 1
    [0, 1, 0, 0, 0, 1, 0, 0, 0, 0],  # 5: child of 1
    [1, 0, 1, 0, 0, 0, 1, 0, 0, 0],  # 6: child of 2
    [1, 0, 0, 1, 0, 0, 0, 1, 0, 0],  # 7: child of 3
    [0, 1, 0, 0, 1, 0, 0, 0, 1, 0],  # 8: child of 4
    [0, 1, 0, 0, 0, 1, 0, 0, 0, 1],  # 9: child of 5
], dtype=bool)


def test_221_shape():
    tree = TokenTree((2, 2, 1))
    assert (tree.num_nodes, tree.depth, tree.is_chain) == (10, 3, False)
    assert tree.level_sizes == (2, 4, 4) and tree.level_starts == (0, 2, 6, 10)
    assert tree.parent == (ROOT, ROOT, 0, 0, 1, 1, 2, 3, 4, 5)
    assert tree.level == (0, 0, 1, 1, 1, 1, 2, 2, 2, 2)
    assert np.array_equal(tree.ancestor_mask(), MASK_221)
    assert np.array_equal(tree.ancestor_mask(7), MASK_221[:7, :7])
    assert tree.paths() == [[0, 2, 6], [0, 3, 7], [1, 4, 8], [1, 5, 9]]


def test_child_index_of_every_node_and_rank():
    tree = TokenTree((2, 2, 1))
    expected = {ROOT: [0, 1], 0: [2, 3], 1: [4, 5], 2: [6], 3: [7], 4: [8], 5: [9]}
    for node, children in expected.items():
        assert [tree.child(node, r) for r in range(len(children))] == children
        assert tree.children(node) == children
        assert all(tree.parent[c] == node for c in children)
    for leaf in range(6, 10):
        assert tree.children(leaf) == []
        with pytest.raises(ValueError, match=f"node {leaf} is a leaf"):
            tree.child(leaf, 0)
    with pytest.raises(ValueError, match="rank 2 out of range"):
        tree.child(0, 2)


def test_truncated_bfs_prefix_is_a_tree():
    tree = TokenTree((2, 2, 1))
    assert tree.children(0, num_nodes=3) == [2]
    assert tree.children(1, num_nodes=3) == []
    assert tree.children(ROOT, num_nodes=1) == [0]
    assert [tree.depth_of_prefix(n) for n in (0, 1, 2, 3, 6, 7, 10, 99)] == [0, 1, 1, 2, 2, 3, 3, 3]
    for n in range(1, 11):  # every prefix is ancestor-closed
        assert all(tree.parent[i] < i for i in range(n))


def test_321_paths_and_levels():
    tree = TokenTree((3, 2, 1))
    assert tree.num_nodes == 3 + 6 + 6 and tree.level_starts == (0, 3, 9, 15)
    assert tree.paths() == [[0, 3, 9], [0, 4, 10], [1, 5, 11], [1, 6, 12], [2, 7, 13], [2, 8, 14]]
    for path in tree.paths():
        assert [tree.level[n] for n in path] == [0, 1, 2]
        assert tree.path(path[-1]) == path


@pytest.mark.parametrize("k_config, nodes", [((1,), 1), ((1, 1, 1), 3), ((4,), 4), ((2, 3), 8), ((3, 3, 3), 39)])
def test_sizes_and_chain_mask(k_config, nodes):
    tree = TokenTree(k_config)
    assert tree.num_nodes == nodes
    assert tree.is_chain == all(k == 1 for k in k_config)
    if tree.is_chain:
        assert np.array_equal(tree.ancestor_mask(), np.tril(np.ones((nodes, nodes), dtype=bool)))
    mask = tree.ancestor_mask()
    assert all(mask[i].sum() == tree.level[i] + 1 for i in range(nodes))  # self + ancestors


@pytest.mark.parametrize("bad, message", [
    ((), "k_config=[] must be a non-empty list of positive integers"),
    ((0,), "k_config=[0] must be"),
    ((2, -1), "k_config=[2, -1] must be"),
    ((1.5,), "k_config=[1.5] must be"),
    ((True, 2), "k_config=[True, 2] must be"),
    ((4, 4, 4), "k_config=[4, 4, 4] has 84 nodes; at most 64"),
])
def test_invalid_shapes_name_the_value(bad, message):
    with pytest.raises(ValueError) as e:
        TokenTree(bad)
    assert message in str(e.value)
