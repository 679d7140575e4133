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
    with pytest.raises(ValueError, match="rank 2 out of range: level 1 nodes have 2 children"):
        tree.child(0, 2)
    with pytest.raises(ValueError, match="rank -1 out of range: level 0 nodes have 2 children"):
        tree.child(ROOT, -1)


def test_truncated_bfs_prefix_is_a_tree():
    tree = TokenTree((2, 2, 1))
    assert tree.children(ROOT, num_nodes=0) == [] and tree.children(ROOT, num_nodes=1) == [0]
    assert tree.children(0, num_nodes=3) == [2] and tree.children(1, num_nodes=3) == []
    assert tree.children(1, num_nodes=5) == [4] and tree.children(1, num_nodes=6) == [4, 5]
    assert tree.children(5, num_nodes=9) == [] and tree.children(5, num_nodes=10) == [9]
    assert [tree.depth_of_prefix(n) for n in (0, 1, 2, 3, 6, 7, 10, 99)] == [0, 1, 1, 2, 2, 3, 3, 3]


def test_321_paths_and_levels():
    tree = TokenTree((3, 2, 1))
    assert tree.num_nodes == 3 + 6 + 6 and tree.level_starts == (0, 3, 9, 15)
    assert tree.paths() == [[0, 3, 9], [0, 4, 10], [1, 5, 11], [1, 6, 12], [2, 7, 13], [2, 8, 14]]
    for path in tree.paths():
        assert [tree.level[n] for n in path] == [0, 1, 2]
        assert tree.path(path[-1]) == path


def test_111_is_a_chain_with_a_lower_triangular_mask():
    tree = TokenTree((1, 1, 1))
    assert (tree.is_chain, tree.num_nodes, tree.parent, tree.paths()) == (True, 3, (ROOT, 0, 1), [[0, 1, 2]])
    assert np.array_equal(tree.ancestor_mask(), np.tril(np.ones((3, 3), dtype=bool)))
    assert [tree.children(n) for n in (ROOT, 0, 1, 2)] == [[0], [1], [2], []]


@pytest.mark.parametrize("k_config, level_starts", [
    ((1,), (0, 1)),
    ((4,), (0, 4)),
    ((1, 1, 1), (0, 1, 2, 3)),
    ((2, 3), (0, 2, 8)),
    ((3, 1), (0, 3, 6)),
    ((1, 4, 2), (0, 1, 5, 13)),
    ((3, 3, 3), (0, 3, 12, 39)),
    ((2, 2, 2, 2, 2), (0, 2, 6, 14, 30, 62)),
])
def test_level_starts_and_num_nodes(k_config, level_starts):
    tree = TokenTree(k_config)
    assert tree.level_starts == level_starts
    assert tree.num_nodes == level_starts[-1] and tree.depth == len(k_config)
    assert tree.is_chain == all(k == 1 for k in k_config)
    assert len(tree.paths()) == level_starts[-1] - level_starts[-2]  # one path per leaf


SHAPES = [(1,), (4,), (1, 1, 1), (2, 2, 1), (3, 1), (2, 3), (1, 4, 2), (3, 2, 1), (3, 3, 3), (2, 2, 2, 2, 2)]


@pytest.mark.parametrize("k_config", SHAPES)
def test_every_node_and_prefix_against_brute_force(k_config):
    """parent / level / child / children / path / ancestor_mask / depth_of_prefix,
    each checked against a definition computed from the parent map alone."""
    tree = TokenTree(k_config)
    n = tree.num_nodes
    for i in range(n):
        up = [i]
        while tree.parent[up[-1]] != ROOT:
            assert tree.parent[up[-1]] < up[-1]  # parents precede children: prefixes are trees
            up.append(tree.parent[up[-1]])
        assert tree.path(i) == up[::-1] and tree.level[i] == len(up) - 1
        assert np.flatnonzero(tree.ancestor_mask()[i]).tolist() == sorted(up)
    for node in [ROOT, *range(n)]:
        kids = [c for c in range(n) if tree.parent[c] == node]
        assert [tree.child(node, r) for r in range(len(kids))] == kids
        for prefix in range(n + 1):
            assert tree.children(node, prefix) == [c for c in kids if c < prefix]
    for prefix in range(n + 1):
        assert np.array_equal(tree.ancestor_mask(prefix), tree.ancestor_mask()[:prefix, :prefix])
        assert tree.depth_of_prefix(prefix) == (tree.level[prefix - 1] + 1 if prefix else 0)


def test_ancestor_mask_is_read_only():
    with pytest.raises(ValueError, match="read-only"):
        TokenTree((2, 2, 1)).ancestor_mask()[0, 1] = True


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
