"""Tree attention over the paged CPU KV cache, against a dense per-path oracle."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from vllm_seed.tree import TokenTree
from vllm_seed.tree_attention import TreeRequest, TreeStep, _read_context_kv

BLOCK, HEADS, KV_HEADS, D = 32, 4, 2, 32


class CPUVecImpl:
    """The two things TreeStep uses of vLLM's CPU attention impl."""

    head_size, scale = D, D**-0.5

    def __init__(self, isa):
        self.isa = isa

    def do_kv_cache_update(self, layer, key, value, kv_cache, slot_mapping):
        from vllm import _custom_ops as ops

        nb, h, bs, _ = kv_cache.shape
        key_cache, value_cache = kv_cache.view(nb, h, 2 * bs, -1).chunk(2, dim=2)
        ops.cpu_attn_reshape_and_cache(key, value, key_cache, value_cache, slot_mapping, self.isa)


def read_positions(kv_cache, block_ids, n):
    """[n, kv_heads, D] K and V of one branch's first n positions."""
    blocks = torch.tensor([[block_ids[p // BLOCK] for p in range(n)]])
    offsets = torch.arange(n)[None] % BLOCK
    k, v = _read_context_kv(kv_cache, blocks, offsets)
    return k[0], v[0]


def slots_of(block_ids, positions):
    return torch.tensor([block_ids[p // BLOCK] * BLOCK + p % BLOCK for p in positions])


@pytest.mark.parametrize("isa", ["vec", "vec16"])
def test_context_read_matches_vllm_cache_writer(isa):
    kv_cache = torch.zeros(6, KV_HEADS, BLOCK, 2 * D)
    block_ids = torch.tensor([4, 1, 3])
    n = 70  # spans three blocks, the last one partly
    keys, values = torch.randn(n, KV_HEADS, D), torch.randn(n, KV_HEADS, D)
    CPUVecImpl(isa).do_kv_cache_update(None, keys, values, kv_cache, slots_of(block_ids.tolist(), range(n)))
    k, v = read_positions(kv_cache, block_ids.tolist(), n)
    assert torch.equal(k, keys) and torch.equal(v, values)


def dense_path_attention(q, ctx_k, ctx_v, root_k, root_v, node_k, node_v, path):
    """Oracle: the last node of ``path`` attends causally to context + root + path."""
    keys = torch.cat([ctx_k, root_k[None], node_k[path]])  # [L, kvh, D]
    values = torch.cat([ctx_v, root_v[None], node_v[path]])
    keys = keys.repeat_interleave(HEADS // KV_HEADS, dim=1).transpose(0, 1)  # [H, L, D]
    values = values.repeat_interleave(HEADS // KV_HEADS, dim=1).transpose(0, 1)
    weights = torch.softmax(q[:, None] @ keys.transpose(1, 2) * D**-0.5, dim=-1)  # [H, 1, L]
    return (weights @ values)[:, 0]  # [H, D]


def test_tree_rows_attend_to_context_root_and_ancestors_only():
    """Three trees of different sizes and contexts in one batch, plus a plain row."""
    torch.manual_seed(0)
    tree = TokenTree((2, 2, 1))
    impl = CPUVecImpl("vec")
    kv_cache = torch.zeros(12, KV_HEADS, BLOCK, 2 * D)
    trees = [([5, 2, 7], 40, 10), ([1, 9], 33, 7), ([3], 5, 3)]  # (blocks, cached, nodes)
    contexts = []
    for blocks, cached, _ in trees:
        ctx = torch.randn(cached, KV_HEADS, D), torch.randn(cached, KV_HEADS, D)
        impl.do_kv_cache_update(None, *ctx, kv_cache, slots_of(blocks, range(cached)))
        contexts.append(ctx)
    starts, begin = [], 3  # a 3-token plain request comes first
    for _, _, m in trees:
        starts.append(begin)
        begin += 1 + m
    total = begin
    query, key, value = (torch.randn(total, n, D) for n in (HEADS, KV_HEADS, KV_HEADS))
    output = torch.zeros(total, HEADS * D)
    metadata = SimpleNamespace(
        query_start_loc=torch.tensor([0, *starts, total]),
        seq_lens=torch.tensor([3] + [c + 1 + m for _, c, m in trees]),
        block_table=torch.tensor([[0, 0, 0]] + [b + [0] * (3 - len(b)) for b, _, _ in trees]),
        slot_mapping=torch.cat([torch.arange(3)] + [
            slots_of(b, range(c, c + 1 + m)) for b, c, m in trees]),
    )
    step = TreeStep(tree)
    step.begin([TreeRequest(f"r{i}", m, None, row=1 + i, start=s) for i, ((_, _, m), s) in enumerate(zip(trees, starts))])
    step.attend(impl, None, query, key, value, kv_cache, metadata, output)
    out = output.view(total, HEADS, D)
    for (_, _, m), s, (ctx_k, ctx_v) in zip(trees, starts, contexts):
        for node in range(m):
            expected = dense_path_attention(
                query[s + 1 + node], ctx_k, ctx_v, key[s], value[s], key[s + 1 :], value[s + 1 :], tree.path(node),
            )
            torch.testing.assert_close(out[s + 1 + node], expected, rtol=1e-5, atol=1e-5)
        assert torch.equal(out[s], torch.zeros(HEADS, D))  # root rows keep the kernel's result
    assert torch.equal(out[:3], torch.zeros(3, HEADS, D))  # other rows untouched
    assert torch.equal(step.plan.slots[0], metadata.slot_mapping[starts[0] + 1 : starts[0] + 11])


def test_compaction_moves_the_accepted_path_to_its_levels():
    tree = TokenTree((2, 2, 1))
    impl = CPUVecImpl("vec")
    kv_cache = torch.zeros(4, KV_HEADS, BLOCK, 2 * D)
    block_ids = [3, 1]
    num_cached, m = 30, tree.num_nodes
    node_slots = slots_of(block_ids, range(num_cached + 1, num_cached + 1 + m))
    node_k, node_v = torch.randn(m, KV_HEADS, D), torch.randn(m, KV_HEADS, D)
    impl.do_kv_cache_update(None, node_k, node_v, kv_cache, node_slots)  # as the forward wrote them
    step = TreeStep(tree)
    step.begin([TreeRequest("r", m, None, row=0, start=0)])
    step.plan = SimpleNamespace(slots=node_slots[None], keys=[node_k[None]], values=[node_v[None]])
    step.layers = [(impl, None, kv_cache)]
    accepted = [1, 5, 9]  # node 1 -> its child rank 1 (5) -> leaf 9
    step.compact([accepted])
    k, v = read_positions(kv_cache, block_ids, num_cached + 1 + len(accepted))
    assert torch.equal(k[num_cached + 1 :], node_k[accepted]) and torch.equal(v[num_cached + 1 :], node_v[accepted])


def test_locate_gives_nodes_their_level_positions():
    tree = TokenTree((2, 2, 1))
    step = TreeStep(tree)
    req = TreeRequest("b", 7, None)
    step.begin([req])
    positions = torch.arange(100, 112)  # request "a": 4 tokens, then b's root + 7 nodes
    step.locate({"a": 0, "b": 1}, np.array([0, 4, 12]), positions)
    assert (req.row, req.start) == (1, 4)
    assert positions.tolist() == [100, 101, 102, 103, 104, 105, 105, 106, 106, 106, 106, 107]


@pytest.mark.parametrize("isa, impl_kw, message", [
    (None, {}, "the FakeImpl attention backend"),
    ("amx", {}, "CPU attention isa='amx'"),
    ("vec", {"sliding_window": 128}, "sliding_window=128"),
    ("vec", {"sinks": torch.zeros(2)}, "attention sinks"),
])
def test_unsupported_attention_fails_at_startup_naming_why(isa, impl_kw, message):
    from vllm_seed.tree_attention import check_backend

    class FakeImpl:
        sliding_window, alibi_slopes, logits_soft_cap, sinks = -1, None, 0, None

    impl = FakeImpl()
    for name, value in impl_kw.items():
        setattr(impl, name, value)
    with pytest.raises(NotImplementedError, match="token-tree verification does not support") as e:
        check_backend(impl, SimpleNamespace(isa=isa))
    assert message in str(e.value)
