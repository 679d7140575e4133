"""A small batched Llama forward for draft models, over per-branch KV slots.

Hugging Face's ``generate`` keeps one cache per call; a drafter needs one KV
cache per *branch* that persists across rounds (prefill only new tokens) and
a forward that runs several branches of different lengths as one batch. This
module does exactly that with the draft's own weights, in float32.
Checked against ``transformers`` logits in tests/unit/test_draft_model.py.
"""

from __future__ import annotations

import json
import os
from collections import Counter

import torch
import torch.nn.functional as F

from vllm_seed.config import HEAD_DTYPES


# The LM head is most of a small draft's forward. For 2-8 rows, MKL's x @ W.T
# kernel is 2-6x slower than W @ x.T (3 rows x 192 x 49152 on one AVX2 core:
# 17.6 vs 2.9 ms; 1 row and 12+ rows: the same or better), so the head takes
# the transposed product there.
_TRANSPOSED_HEAD_ROWS = 8


class DraftLM:
    """Llama-architecture causal LM with a slot-indexed KV store."""

    def __init__(self, model_dir: str, max_len: int, slots: int = 8, head: str = "float32"):
        from transformers import AutoConfig, AutoModelForCausalLM

        config = AutoConfig.from_pretrained(model_dir)
        if config.model_type != "llama":
            raise ValueError(
                f"draft model {model_dir!r} has model_type={config.model_type!r}; "
                "the SEED drafter runs Llama-architecture drafts"
            )
        if getattr(config, "attention_bias", False) or getattr(config, "mlp_bias", False):
            raise ValueError(f"draft model {model_dir!r} uses biases; the SEED drafter runs bias-free Llama")
        hf = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
        self.vocab_size = config.vocab_size
        self.max_len = min(max_len, config.max_position_embeddings)
        self.num_heads = config.num_attention_heads
        self.num_kv_heads = config.num_key_value_heads
        self.head_dim = getattr(config, "head_dim", None) or (
            config.hidden_size // config.num_attention_heads
        )
        self.eps = config.rms_norm_eps
        self.num_layers = config.num_hidden_layers
        self.weights = _fuse(
            {k: v.detach() for k, v in hf.state_dict().items()}, self.num_layers
        )
        self.inv_freq = _rope_inv_freq(config, self.head_dim)
        if head not in HEAD_DTYPES:
            raise ValueError(f"draft head={head!r} must be one of {list(HEAD_DTYPES)}")
        # A draft may propose from part of the vocabulary (draft_vocab(), below):
        # the head then has only those rows, and every other token gets logit
        # -inf, probability 0, so q is still a distribution over the whole
        # vocabulary and verification against it stays lossless.
        self.head_ids = draft_vocab(model_dir, self.vocab_size)
        if self.head_ids is not None:
            self.weights["lm_head.weight"] = self.weights["lm_head.weight"][self.head_ids].contiguous()
        self.int8_head = Int8Head(self.weights["lm_head.weight"]) if head == "int8" else None
        self.k = self.v = None
        self._alloc(slots)

    def _alloc(self, slots: int) -> None:
        # [layers, slots, kv_heads, max_len, head_dim]
        shape = (self.num_layers, slots, self.num_kv_heads, self.max_len, self.head_dim)
        k, v = torch.zeros(shape), torch.zeros(shape)
        if self.k is not None:
            k[:, : self.k.shape[1]] = self.k
            v[:, : self.v.shape[1]] = self.v
        self.k, self.v = k, v

    @property
    def num_slots(self) -> int:
        return self.k.shape[1]

    def grow(self, slots: int) -> None:
        if slots > self.num_slots:
            self._alloc(max(slots, 2 * self.num_slots))

    @torch.inference_mode()
    def forward(
        self, slots: list[int], cached: list[int], new_tokens: list[list[int]]
    ) -> torch.Tensor:
        """Run ``new_tokens[b]`` after ``cached[b]`` tokens of slot ``slots[b]``.

        Writes the new tokens' KV into the slots and returns the logits of the
        last new token of each branch, [B, V].
        """
        batch = len(slots)
        lens = torch.tensor([len(t) for t in new_tokens])
        width = int(lens.max())
        ids = torch.zeros(batch, width, dtype=torch.long)
        for b, toks in enumerate(new_tokens):
            ids[b, : len(toks)] = torch.tensor(toks)
        start = torch.tensor(cached)
        pos = start[:, None] + torch.arange(width)[None, :]  # [B, T]
        end = int((start + lens).max())
        # Each new token sees its slot's keys up to its own position: the
        # new tokens' KV goes into the slot first, and anything beyond a
        # branch's own tokens (padding, rejected drafts) lies past it.
        mask = (torch.arange(end)[None, None, :] <= pos[:, :, None])[:, None]  # [B, 1, T, end]
        cos, sin = _rope(self.inv_freq, pos)
        first = slots[0]
        contiguous = slots == list(range(first, first + batch))
        slot_idx = torch.tensor(slots)
        w = self.weights
        x = w["model.embed_tokens.weight"][ids]  # [B, T, H]
        for layer in range(self.num_layers):
            q, k, v = self._qkv(layer, x, cos, sin)
            for b in range(batch):  # keep the new tokens' KV for the next round
                s, n = int(start[b]), int(lens[b])
                self.k[layer, slots[b], :, s : s + n] = k[b, :, :n]
                self.v[layer, slots[b], :, s : s + n] = v[b, :, :n]
            if contiguous:  # a view: no copy of the branches' caches
                keys = self.k[layer, first : first + batch, :, :end]
                values = self.v[layer, first : first + batch, :, :end]
            else:
                keys, values = self.k[layer, slot_idx, :, :end], self.v[layer, slot_idx, :, :end]
            x = x + self._attend(layer, q, keys, values, mask)
            x = x + self._mlp(layer, x)
        return self._head(x[torch.arange(batch), lens - 1])  # [B, V]: each branch's last token

    @torch.inference_mode()
    def forward_nodes(
        self, slots: list[int], cached: list[int], ids: torch.Tensor, pos: torch.Tensor,
        node_kv: list, node_mask: torch.Tensor,
    ) -> torch.Tensor:
        """Run M token-tree nodes per branch: ``ids`` at positions ``pos`` [B, M].

        Each node sees the first ``cached[b]`` tokens of slot ``slots[b]``,
        then, under ``node_mask`` [M, P + M] (bool, one tree shape for the
        batch), the P earlier nodes whose KV is in ``node_kv`` (per layer a
        (K, V) pair [B, kv_heads, P, D], or None while P = 0) and the new
        nodes. Node KV never enters the slots (siblings share positions): it
        is appended to ``node_kv`` in place. Returns the nodes' logits [B, M, V].
        """
        batch, width = ids.shape
        start = torch.tensor(cached)
        past = int(start.max())
        node_ok = node_mask[None].expand(batch, -1, -1)  # [B, M, P + M]
        mask = torch.cat([_cache_mask(start, past, width), node_ok], dim=2)[:, None]  # [B, 1, M, past+P+M]
        cos, sin = _rope(self.inv_freq, pos)
        slot_idx = torch.tensor(slots)
        x = self.weights["model.embed_tokens.weight"][ids]  # [B, M, H]
        for layer in range(self.num_layers):
            q, k, v = self._qkv(layer, x, cos, sin)
            if node_kv[layer] is not None:
                k = torch.cat([node_kv[layer][0], k], dim=2)  # [B, kv_heads, P + M, D]
                v = torch.cat([node_kv[layer][1], v], dim=2)
            node_kv[layer] = (k, v)
            keys = torch.cat([self.k[layer, slot_idx, :, :past], k], dim=2)
            values = torch.cat([self.v[layer, slot_idx, :, :past], v], dim=2)
            x = x + self._attend(layer, q, keys, values, mask)
            x = x + self._mlp(layer, x)
        return self._head(x)

    def _head(self, x: torch.Tensor) -> torch.Tensor:
        """Final norm and LM head: hidden [..., H] -> logits [..., V]."""
        x = _rms_norm(x, self.weights["model.norm.weight"], self.eps)
        rows = x.reshape(-1, x.shape[-1])  # [R, H]
        head = self.weights["lm_head.weight"]  # [V, H]
        if self.int8_head is not None:
            logits = self.int8_head(rows)
        elif 1 < len(rows) <= _TRANSPOSED_HEAD_ROWS:
            logits = (head @ rows.T).T.contiguous()
        else:
            logits = F.linear(rows, head)
        if self.head_ids is not None:
            full = logits.new_full((len(rows), self.vocab_size), -torch.inf)
            full[:, self.head_ids] = logits
            logits = full
        return logits.view(*x.shape[:-1], -1)

    def _qkv(self, layer, x, cos, sin):
        """Rotated q [B, heads, T, D] and k, v [B, kv_heads, T, D] of ``x`` [B, T, H]."""
        w = self.weights
        batch, width, _ = x.shape
        h = _rms_norm(x, w[f"model.layers.{layer}.input_layernorm.weight"], self.eps)
        qkv = F.linear(h, w[f"model.layers.{layer}.qkv"]).view(batch, width, -1, self.head_dim)
        q, k, v = qkv.split([self.num_heads, self.num_kv_heads, self.num_kv_heads], dim=2)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # [B, heads, T, D]
        return _apply_rope(q, cos, sin), _apply_rope(k, cos, sin), v

    def _attend(self, layer, q, keys, values, mask):
        repeat = self.num_heads // self.num_kv_heads
        if repeat > 1:
            keys = keys.repeat_interleave(repeat, dim=1)
            values = values.repeat_interleave(repeat, dim=1)
        out = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask)
        batch, _, width, _ = q.shape
        out = out.transpose(1, 2).reshape(batch, width, -1)
        return F.linear(out, self.weights[f"model.layers.{layer}.self_attn.o_proj.weight"])

    def _mlp(self, layer, x):
        p = f"model.layers.{layer}."
        h = _rms_norm(x, self.weights[p + "post_attention_layernorm.weight"], self.eps)
        gate, up = F.linear(h, self.weights[p + "gate_up"]).chunk(2, dim=-1)
        return F.linear(F.silu(gate) * up, self.weights[p + "mlp.down_proj.weight"])


DRAFT_VOCAB_FILE = "draft_vocab.json"


def draft_vocab(model_dir: str, vocab_size: int) -> torch.Tensor | None:
    """The token ids a draft proposes from, if its directory lists them in
    ``draft_vocab.json`` ({"token_ids": [...]}); None: the whole vocabulary.

    Most of a small draft's forward is its LM head, and a task's text uses
    few of the vocabulary's tokens (the SmolLM2 draft: GSM8K replies,
    benchmarks/models/README.md), so a head over those rows costs a fraction
    of the full one for nearly the same acceptance. Stock vLLM runs the same
    directory with its full head.
    """
    path = os.path.join(model_dir, DRAFT_VOCAB_FILE)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        ids = json.load(f).get("token_ids")
    if not isinstance(ids, list) or not ids or not all(isinstance(i, int) for i in ids):
        raise ValueError(f"{path}: token_ids must be a non-empty list of token ids")
    bad = [i for i in ids if not 0 <= i < vocab_size]
    if bad:
        raise ValueError(f"{path}: token id {bad[0]} is outside the draft's vocabulary of {vocab_size}")
    twice = next((i for i, n in Counter(ids).items() if n > 1), None)
    if twice is not None:
        raise ValueError(f"{path}: token_ids lists token {twice} twice")
    return torch.tensor(sorted(ids))


class Int8Head:
    """The LM head with int8 weights (one scale per vocabulary row), through
    fbgemm's dynamic-quantised linear: [R, H] -> [R, V] float32.

    The head is most of a small draft's forward and, at a few rows, bound by
    reading its weights: int8 reads a quarter of the bytes (the drafter's time
    per call, int8 against float32: benchmarks/results/bench_tot_smollm2.md's
    profile table). The logits move a little and acceptance does not
    (benchmarks/draft_head_acceptance.py: the same greedy agreement and T=1
    acceptance with either head), so drafts are proposed from a slightly
    different q, the one they are then verified with: lossless either way.

    fbgemm quantises its input with one range for the whole batch, which
    would make a branch's logits depend on its batch mates (and a seeded
    request's drafts on timing). So each row is scaled to max |x| = 1 and a
    fixed row holding -1 and 1 pins the range: each row's logits are the same
    bit for bit alone or in any batch.
    """

    def __init__(self, weight: torch.Tensor):
        import warnings

        scale = (weight.abs().amax(dim=1) / 127.0).clamp_min(1e-12).double()
        with warnings.catch_warnings():  # torch deprecates quantised tensors, not these kernels
            warnings.simplefilter("ignore")
            q = torch.quantize_per_channel(weight, scale, torch.zeros_like(scale, dtype=torch.long), 0, torch.qint8)
            self.packed = torch.ops.quantized.linear_prepack(q, None)
        self.pin = torch.zeros(1, weight.shape[1])
        self.pin[0, 0], self.pin[0, 1] = -1.0, 1.0

    def __call__(self, rows: torch.Tensor) -> torch.Tensor:
        peak = rows.abs().amax(dim=1, keepdim=True).clamp_min(1e-12)
        out = torch.ops.quantized.linear_dynamic(torch.cat([rows / peak, self.pin]), self.packed, False)
        return out[:-1] * peak


def _fuse(weights: dict, num_layers: int) -> dict:
    """One matmul for q/k/v and one for gate/up per layer: fewer small ops."""
    if "lm_head.weight" not in weights:  # tied embeddings
        weights["lm_head.weight"] = weights["model.embed_tokens.weight"]
    for layer in range(num_layers):
        p = f"model.layers.{layer}."
        weights[p + "qkv"] = torch.cat([weights.pop(p + f"self_attn.{n}_proj.weight") for n in "qkv"])
        weights[p + "gate_up"] = torch.cat(
            [weights.pop(p + "mlp.gate_proj.weight"), weights.pop(p + "mlp.up_proj.weight")]
        )
    return weights


def _cache_mask(start, past: int, width: int) -> torch.Tensor:
    """[B, T, past]: each of a branch's T new rows sees its first start[b] cached keys."""
    cache_ok = torch.arange(past)[None, :] < start[:, None]  # [B, past]
    return cache_ok[:, None, :].expand(-1, width, -1)


def _rope_inv_freq(config, head_dim: int) -> torch.Tensor:
    params = getattr(config, "rope_parameters", None) or {}
    rope_type = params.get("rope_type", "default")
    if rope_type != "default":
        raise ValueError(f"draft model rope_type={rope_type!r} is not supported")
    theta = params.get("rope_theta") or getattr(config, "rope_theta", 10000.0)
    return 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))


def _rope(inv_freq, pos):
    freqs = pos[..., None].float() * inv_freq  # [B, T, D/2]
    emb = torch.cat([freqs, freqs], dim=-1)[:, None]  # [B, 1, T, D]
    return emb.cos(), emb.sin()


def _apply_rope(x, cos, sin):
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos + rotated * sin


def _rms_norm(x, weight, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight
