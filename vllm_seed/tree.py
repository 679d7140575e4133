"""MCSD token trees: the shape maths of a ``k_config`` draft (pure, no torch).

Vocabulary:

- **root**: the branch's last token (already sampled, not yet in the KV
  cache). It is not a node; its children are the level-0 nodes.
- **node**: one draft token. Nodes are numbered in BFS order, level by level
  and, within a level, by parent then by the parent's child rank, so every
  parent precedes its children and a BFS prefix of a tree is again a tree.
- ``k_config = (k1, ..., kL)``: every node at level d-1 (the root for d = 1)
  has k_d children; ``(1, 1, 1)`` is a chain of 3, ``(2, 2, 1)`` has
  2 + 4 + 4 = 10 nodes and 4 root-to-leaf paths.
- **position**: a node at level d sits at position ``num_context + d``, where
  ``num_context`` counts the branch's tokens including the root; siblings
  share positions.

A verification step feeds ``[root, node 0, ..., node N-1]``; node i attends
to the context, the root, its ancestors and itself (``ancestor_mask``).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property, lru_cache

import numpy as np

ROOT = -1  # parent index of level-0 nodes
MAX_TREE_NODES = 64  # per draft; vLLM's rejection sampler caps drafts at 128


@dataclass(frozen=True)
class TokenTree:
    k_config: tuple[int, ...]

    def __post_init__(self) -> None:
        k_config = tuple(self.k_config)
        object.__setattr__(self, "k_config", k_config)
        if not k_config or not all(isinstance(k, int) and not isinstance(k, bool) and k >= 1 for k in k_config):
            raise ValueError(
                f"k_config={list(k_config)} must be a non-empty list of positive integers, e.g. [2, 2, 1]"
            )
        if self.num_nodes > MAX_TREE_NODES:
            raise ValueError(
                f"k_config={list(k_config)} has {self.num_nodes} nodes; at most "
                f"{MAX_TREE_NODES} are verified per draft"
            )

    @property
    def depth(self) -> int:
        return len(self.k_config)

    @property
    def is_chain(self) -> bool:
        return all(k == 1 for k in self.k_config)

    @cached_property
    def level_sizes(self) -> tuple[int, ...]:
        sizes, width = [], 1
        for k in self.k_config:
            width *= k
            sizes.append(width)
        return tuple(sizes)

    @property
    def num_nodes(self) -> int:
        return sum(self.level_sizes)

    @cached_property
    def level_starts(self) -> tuple[int, ...]:
        """Index of the first node of each level, plus num_nodes at the end."""
        return tuple(int(x) for x in np.cumsum((0,) + self.level_sizes))

    @cached_property
    def parent(self) -> tuple[int, ...]:
        """parent[i]: the node whose child i is (ROOT for level 0)."""
        out = []
        for d, k in enumerate(self.k_config):
            if d == 0:
                out += [ROOT] * k
            else:
                first = self.level_starts[d - 1]
                out += [first + j for j in range(self.level_sizes[d - 1]) for _ in range(k)]
        return tuple(out)

    @cached_property
    def level(self) -> tuple[int, ...]:
        """level[i]: 0 for the root's children; the position offset of node i."""
        return tuple(d for d, size in enumerate(self.level_sizes) for _ in range(size))

    def child(self, node: int, rank: int) -> int:
        """Index of child ``rank`` (0-based) of ``node`` (ROOT for the root)."""
        d = 0 if node == ROOT else self.level[node] + 1
        if d >= self.depth:
            raise ValueError(f"node {node} is a leaf of k_config={list(self.k_config)}")
        k = self.k_config[d]
        if not 0 <= rank < k:
            raise ValueError(f"rank {rank} out of range: level {d} nodes have {k} children")
        offset = 0 if node == ROOT else node - self.level_starts[d - 1]
        return self.level_starts[d] + offset * k + rank

    def children(self, node: int, num_nodes: int | None = None) -> list[int]:
        """Children of ``node`` in rank order, among the first ``num_nodes`` nodes."""
        limit = self.num_nodes if num_nodes is None else num_nodes
        d = 0 if node == ROOT else self.level[node] + 1
        if d >= self.depth:
            return []
        return [c for c in (self.child(node, r) for r in range(self.k_config[d])) if c < limit]

    def path(self, node: int) -> list[int]:
        """Nodes from level 0 down to ``node`` inclusive."""
        out = []
        while node != ROOT:
            out.append(node)
            node = self.parent[node]
        return out[::-1]

    def paths(self) -> list[list[int]]:
        """Root-to-leaf paths, leaves in BFS order."""
        return [self.path(leaf) for leaf in range(self.level_starts[-2], self.num_nodes)]

    @cached_property
    def _mask(self) -> np.ndarray:
        mask = np.zeros((self.num_nodes, self.num_nodes), dtype=bool)
        for i in range(self.num_nodes):
            mask[i, self.path(i)] = True
        mask.setflags(write=False)
        return mask

    def ancestor_mask(self, num_nodes: int | None = None) -> np.ndarray:
        """[n, n] bool: node i may attend to node j (j is i or an ancestor of i)."""
        n = self.num_nodes if num_nodes is None else num_nodes
        return self._mask[:n, :n]

    def depth_of_prefix(self, num_nodes: int) -> int:
        """Levels present in the BFS prefix of ``num_nodes`` nodes."""
        return 0 if num_nodes <= 0 else self.level[min(num_nodes, self.num_nodes) - 1] + 1


@lru_cache(maxsize=16)
def token_tree(k_config: tuple[int, ...]) -> TokenTree:
    """The one TokenTree of a shape: its masks and maps are computed once per
    process, not once per drafting round."""
    return TokenTree(k_config)
