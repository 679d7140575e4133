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


@dataclass
class _Plan:
    """Index tensors of one step's trees, padded to M = the largest tree (R trees)."""

    nodes: torch.Tensor  # [R, M] flat batch index of each node (padding: the root)
    current: torch.Tensor  # [R, 1 + M] flat index of the root, then the nodes
    ctx_block: torch.Tensor  # [R, C] cache block of each context position
    ctx_offset: torch.Tensor  # [R, C] offset in that block
    mask: torch.Tensor  # [R, 1, M, C + 1 + M] bool: context, root, ancestors
    slots: torch.Tensor  # [R, M] KV slots of positions c+1 .. c+M
    keys: list[torch.Tensor] = field(default_factory=list)  # per layer [R, M, kv_heads, D]
    values: list[torch.Tensor] = field(default_factory=list)


class TreeStep:
    """Tree drafts of the step being run, and the attention layers that saw them."""

    def __init__(self, tree: TokenTree):
        self.tree = tree
        self.requests: list[TreeRequest] = []
        self.layers: list[tuple[object, object, torch.Tensor]] = []  # (impl, layer, kv_cache)
        self.plan: _Plan | None = None

    def begin(self, requests: list[TreeRequest]) -> None:
        self.requests = requests
        self.layers = []
        self.plan = None

    def locate(self, req_id_to_row: dict[str, int], query_start: list[int], positions: torch.Tensor) -> None:
        """Find each tree in the flat batch and give its nodes their level positions."""
        for req in self.requests:
            req.row = req_id_to_row[req.req_id]
            req.start = int(query_start[req.row])
            levels = torch.tensor(self.tree.level[: req.num_nodes], dtype=positions.dtype)
            nodes = slice(req.start + 1, req.start + 1 + req.num_nodes)
            positions[nodes] = positions[req.start] + 1 + levels.to(positions.device)

    def attend(self, impl, layer, query, key, value, kv_cache, metadata, output) -> None:
        """Recompute the tree rows of ``output`` with the ancestor mask, all trees at once."""
        if self.plan is None:
            self.plan = self._make_plan(metadata, kv_cache.shape[2])
        plan = self.plan
        self.layers.append((impl, layer, kv_cache))
        head_dim = impl.head_size
        query = query.view(query.shape[0], -1, head_dim)  # [T, H, D]
        key = key.view(key.shape[0], -1, head_dim)  # [T, kv_heads, D]
        value = value.view(value.shape[0], -1, head_dim)
        k_ctx, v_ctx = _read_context_kv(kv_cache, plan.ctx_block, plan.ctx_offset)  # [R, C, kvh, D]
        keys = torch.cat([k_ctx, key[plan.current]], dim=1)  # [R, C+1+M, kvh, D]
        values = torch.cat([v_ctx, value[plan.current]], dim=1)
        attended = _attention(query[plan.nodes], keys, values, plan.mask, impl.scale)  # [R, M, H, D]
        out = output.view(output.shape[0], -1, head_dim)  # [T, H, D]
        for r, req in enumerate(self.requests):
            out[req.start + 1 : req.start + 1 + req.num_nodes] = attended[r, : req.num_nodes]
        plan.keys.append(key[plan.nodes])
        plan.values.append(value[plan.nodes])

    def _make_plan(self, metadata, block_size: int) -> _Plan:
        device = metadata.slot_mapping.device
        width = max(req.num_nodes for req in self.requests)
        cached = []
        for req in self.requests:
            _check_layout(metadata, req)
            cached.append(int(metadata.seq_lens[req.row]) - (1 + req.num_nodes))
        rows = torch.tensor([req.row for req in self.requests], device=device)
        starts = torch.tensor([req.start for req in self.requests], device=device)
        counts = torch.tensor([req.num_nodes for req in self.requests], device=device)
        offsets = torch.arange(1, width + 1, device=device)
        nodes = torch.where(offsets <= counts[:, None], starts[:, None] + offsets, starts[:, None])  # [R, M]
        positions = torch.arange(max(cached), device=device)  # [C]
        ctx_block = metadata.block_table[rows][:, positions // block_size].long()  # [R, C]
        ctx_ok = positions[None, :] < torch.tensor(cached, device=device)[:, None]  # [R, C]
        tree_mask = torch.from_numpy(self.tree.ancestor_mask(width).copy()).to(device)  # [M, M]
        mask = torch.cat([
            ctx_ok[:, None, :].expand(-1, width, -1),
            torch.ones(len(rows), width, 1, dtype=torch.bool, device=device),  # the root
            tree_mask[None].expand(len(rows), -1, -1),
        ], dim=2)[:, None]
        return _Plan(
            nodes=nodes, current=torch.cat([starts[:, None], nodes], dim=1), ctx_block=ctx_block,
            ctx_offset=(positions % block_size)[None].expand(len(rows), -1), mask=mask,
            slots=metadata.slot_mapping[nodes].clone(),
        )

    def compact(self, accepted: list[list[int]]) -> None:
        """Move each tree's accepted nodes' KV to the slots of their levels."""
        src, dst = [], []
        for r, path in enumerate(accepted):
            for level, node in enumerate(path):
                if node != level:
                    src.append((r, node))
                    dst.append(self.plan.slots[r, level])
        if not src:
            return
        rows, nodes = (torch.tensor(x) for x in zip(*src))
        slots = torch.stack(dst)
        for (impl, layer, kv_cache), k, v in zip(self.layers, self.plan.keys, self.plan.values):
            impl.do_kv_cache_update(layer, k[rows, nodes], v[rows, nodes], kv_cache, slots)


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


def _read_context_kv(kv_cache: torch.Tensor, blocks: torch.Tensor, offsets: torch.Tensor):
    """K and V at cache (block, offset) pairs [R, C]: each [R, C, kv_heads, D].

    CPU ``vec`` layout: ``kv_cache`` is [blocks, kv_heads, block_size, 2 * D];
    per block and head, the keys are stored transposed ([D, block_size]), then
    the values ([block_size, D]). tests/unit/test_tree_attention.py checks this
    against vLLM's own cache writer.
    """
    num_blocks, kv_heads, block_size, two_d = kv_cache.shape
    head_dim = two_d // 2
    halves = kv_cache.view(num_blocks, kv_heads, 2, block_size * head_dim)
    keys = halves[:, :, 0].view(num_blocks, kv_heads, head_dim, block_size)[blocks, :, :, offsets]
    values = halves[:, :, 1].view(num_blocks, kv_heads, block_size, head_dim)[blocks, :, offsets, :]
    return keys, values


def _attention(query, keys, values, mask, scale: float) -> torch.Tensor:
    """query [R, M, H, D]; keys/values [R, L, kv_heads, D]; mask [R, 1, M, L] -> [R, M, H, D]."""
    repeat = query.shape[2] // keys.shape[2]
    q, k, v = (t.transpose(1, 2).float() for t in (query, keys, values))  # [R, heads, *, D]
    if repeat > 1:
        k = k.repeat_interleave(repeat, dim=1)
        v = v.repeat_interleave(repeat, dim=1)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)
    return out.transpose(1, 2).to(query.dtype)
