"""Tree attention over vLLM's paged KV cache, for one target step.

A verified tree draft is fed as ``[root, node 0, ..., node M-1]`` (BFS order,
see tree.py) at the slots of positions ``c .. c + M`` (c = tokens already in
the cache), so vLLM writes every token's KV as usual. Two things differ from
a chain, and this module does both:

1. Attention: vLLM's kernel is causal over the flattened nodes, which lets a
   node see siblings and cousins. After the kernel runs, each tree row is
   recomputed: its query attends to the cached context (read back from the
   paged cache), the root and its own ancestors (``ancestor_mask``). The root
   row is causal, so the kernel's result stands.
2. Compaction: after verification the accepted path's nodes must sit at
   positions ``c + 1 .. c + a``. A node's K/V is rewritten into the slot of
   its level with the backend's own cache writer; vLLM's ordinary rollback of
   rejected tokens (``num_computed_tokens -= num_rejected``) does the rest, so
   the next step is an ordinary continuation.

Node positions (``c + 1 + level``) are set by the worker before the forward,
after vLLM derived the slot mapping from the flattened positions.

Only the context read is backend-specific (``_read_context_kv``, the CPU
``vec`` layout); everything else is plain PyTorch on any device. A GPU
backend drops in by supplying that one reader for its cache layout.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from vllm_seed.tree import TokenTree

SUPPORTED_CPU_ISAS = ("vec", "vec16")  # layouts _read_context_kv knows


@dataclass
class TreeRequest:
    """One branch's tree draft in the current target step."""

    req_id: str
    num_nodes: int  # M: nodes scheduled (a BFS prefix of the tree)
    draft_probs: torch.Tensor | None  # [M, V] q of each node; None if greedy
    row: int = -1  # batch row (vLLM's input-batch order)
    start: int = -1  # flat index of the root token in the batch
    slots: torch.Tensor | None = None  # [M] KV slots of positions c+1 .. c+M
    keys: list[torch.Tensor] = field(default_factory=list)  # per layer [M, kv_heads, D]
    values: list[torch.Tensor] = field(default_factory=list)


class TreeStep:
    """Tree drafts of the step being run, and the attention layers that saw them."""

    def __init__(self, tree: TokenTree):
        self.tree = tree
        self.requests: list[TreeRequest] = []
        self.layers: list[tuple[object, object, torch.Tensor]] = []  # (impl, layer, kv_cache)

    def begin(self, requests: list[TreeRequest]) -> None:
        self.requests = requests
        self.layers = []

    def end(self) -> None:
        self.requests = []
        self.layers = []

    def locate(self, req_id_to_row: dict[str, int], query_start: list[int], positions: torch.Tensor) -> None:
        """Find each tree in the flat batch and give its nodes their level positions."""
        for req in self.requests:
            req.row = req_id_to_row[req.req_id]
            req.start = int(query_start[req.row])
            levels = torch.tensor(self.tree.level[: req.num_nodes], dtype=positions.dtype)
            nodes = slice(req.start + 1, req.start + 1 + req.num_nodes)
            positions[nodes] = positions[req.start] + 1 + levels.to(positions.device)

    def attend(self, impl, layer, query, key, value, kv_cache, metadata, output) -> None:
        """Recompute the tree rows of ``output`` with the ancestor mask."""
        self.layers.append((impl, layer, kv_cache))
        head_dim = impl.head_size
        query = query.view(query.shape[0], -1, head_dim)  # [T, H, D]
        key = key.view(key.shape[0], -1, head_dim)  # [T, kv_heads, D]
        value = value.view(value.shape[0], -1, head_dim)
        out = output.view(output.shape[0], -1, head_dim)  # [T, H, D]
        for req in self.requests:
            s, m = req.start, req.num_nodes
            _check_layout(metadata, req)
            if req.slots is None:
                req.slots = metadata.slot_mapping[s + 1 : s + 1 + m].clone()
            num_cached = int(metadata.seq_lens[req.row]) - (1 + m)
            k_ctx, v_ctx = _read_context_kv(kv_cache, metadata.block_table[req.row], num_cached)
            keys = torch.cat([k_ctx, key[s : s + 1 + m].transpose(0, 1)], dim=1)  # [kv_heads, c+1+M, D]
            values = torch.cat([v_ctx, value[s : s + 1 + m].transpose(0, 1)], dim=1)
            mask = self._mask(num_cached, m, query.device)  # [M, c+1+M]
            out[s + 1 : s + 1 + m] = _attention(query[s + 1 : s + 1 + m], keys, values, mask, impl.scale)
            req.keys.append(key[s + 1 : s + 1 + m].clone())
            req.values.append(value[s + 1 : s + 1 + m].clone())

    def _mask(self, num_cached: int, m: int, device) -> torch.Tensor:
        nodes = torch.from_numpy(self.tree.ancestor_mask(m).copy()).to(device)  # [M, M]
        context = torch.ones(m, num_cached + 1, dtype=torch.bool, device=device)
        return torch.cat([context, nodes], dim=1)

    def compact(self, req: TreeRequest, accepted: list[int]) -> None:
        """Move the accepted nodes' KV to the slots of their levels."""
        moves = [(level, node) for level, node in enumerate(accepted) if node != level]
        if not moves:
            return
        src = torch.tensor([node for _, node in moves])
        dst = req.slots[torch.tensor([level for level, _ in moves])]
        for (impl, layer, kv_cache), k, v in zip(self.layers, req.keys, req.values):
            impl.do_kv_cache_update(layer, k[src], v[src], kv_cache, dst)


def check_backend(impl, layer) -> None:
    """Tree attention reproduces this backend's math only for plain causal layers."""
    isa = getattr(layer, "isa", None)
    problems = []
    if isa is None:
        problems.append(f"the {type(impl).__name__} attention backend (only the CPU backend's KV "
                        "layout has a reader, _read_context_kv)")
    elif isa not in SUPPORTED_CPU_ISAS:
        problems.append(f"CPU attention isa={isa!r} (supported: {list(SUPPORTED_CPU_ISAS)})")
    if impl.sliding_window not in (-1, None):
        problems.append(f"sliding_window={impl.sliding_window}")
    if impl.alibi_slopes is not None or impl.logits_soft_cap or impl.sinks is not None:
        problems.append("ALiBi, logit soft-capping or attention sinks")
    if getattr(impl, "is_fp8_kv_cache", False):
        problems.append("an FP8 KV cache")
    if problems:
        raise NotImplementedError(
            "SEED token-tree verification does not support " + "; ".join(problems)
            + ". Use a chain (k_config all ones) for this model."
        )


def _check_layout(metadata, req: TreeRequest) -> None:
    begin = int(metadata.query_start_loc[req.row])
    length = int(metadata.query_start_loc[req.row + 1]) - begin
    if begin != req.start or length != 1 + req.num_nodes:
        raise RuntimeError(
            f"tree draft of {req.req_id!r}: expected {1 + req.num_nodes} tokens at {req.start}, "
            f"the batch has {length} at {begin}"
        )


def _read_context_kv(kv_cache: torch.Tensor, block_ids: torch.Tensor, num_tokens: int):
    """K and V of a branch's first ``num_tokens`` positions, each [kv_heads, n, D].

    CPU ``vec`` layout: ``kv_cache`` is [blocks, kv_heads, block_size, 2 * D];
    per block and head, the keys are stored transposed ([D, block_size]), then
    the values ([block_size, D]). tests/e2e/test_tree_verify.py checks this
    against vLLM's own cache writer.
    """
    num_blocks, kv_heads, block_size, two_d = kv_cache.shape
    head_dim = two_d // 2
    used = block_ids[: (num_tokens + block_size - 1) // block_size].long()
    halves = kv_cache.view(num_blocks, kv_heads, 2, block_size * head_dim)[used]  # [b, kvh, 2, bs*D]
    n = len(used)
    keys = halves[:, :, 0].reshape(n, kv_heads, head_dim, block_size).permute(1, 0, 3, 2)
    values = halves[:, :, 1].reshape(n, kv_heads, block_size, head_dim).transpose(0, 1)
    keys = keys.reshape(kv_heads, -1, head_dim)[:, :num_tokens]  # [kvh, n, D]
    values = values.reshape(kv_heads, -1, head_dim)[:, :num_tokens]
    return keys, values


def _attention(query, keys, values, mask, scale: float) -> torch.Tensor:
    """query [M, H, D]; keys/values [kv_heads, L, D]; mask [M, L] -> [M, H, D]."""
    repeat = query.shape[1] // keys.shape[0]
    if repeat > 1:
        keys = keys.repeat_interleave(repeat, dim=0)
        values = values.repeat_interleave(repeat, dim=0)
    q = query.transpose(0, 1).float()  # [H, M, D]
    out = F.scaled_dot_product_attention(q, keys.float(), values.float(), attn_mask=mask, scale=scale)
    return out.transpose(0, 1).to(query.dtype)
