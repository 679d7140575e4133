"""Token-tree verification in the target worker: one target step per tree.

The scheduler sends a tree draft like a chain: ``scheduled_spec_decode_tokens``
holds its nodes in BFS order, so vLLM allocates slots, feeds the tokens and
computes logits at the root and at every node. Around that, the worker:

1. sets the nodes' positions to their levels (TreeStep.locate),
2. masks attention to ancestors (tree_attention.py),
3. replaces vLLM's chain verdict for tree rows with the MCSD walk
   (tree_sampling.verify_tree / verify_tree_greedy): output = accepted nodes'
   tokens + one final (recovered or bonus) token, padded with vLLM's
   placeholder, which is all vLLM's bookkeeping and scheduler need,
4. compacts the accepted path's KV (TreeStep.compact).

Rows without drafts (prefills, plain decodes) keep vLLM's own sampling.
"""

from __future__ import annotations

import numpy as np
import torch

from vllm_seed import _vllm_compat
from vllm_seed.tree import TokenTree
from vllm_seed.tree_attention import TreeRequest, TreeStep, check_backend
from vllm_seed.tree_sampling import verify_tree, verify_tree_greedy


class TreeVerifier:
    """Owns a runner's tree step; installed once per worker when k_config is a
    tree, after the KV cache (and so the attention backend) is set up."""

    def __init__(self, runner, tree: TokenTree, replacement: bool):
        self.runner = runner
        self.step = TreeStep(tree)
        self.replacement = replacement
        _vllm_compat.wrap_prepare_inputs(runner, self._after_prepare_inputs)
        _vllm_compat.wrap_rejection_sampler(runner, self._sample)
        for impl, layer in _vllm_compat.attention_impls(runner):
            check_backend(impl, layer)
            _wrap_attention(impl, self.step)

    def begin(self, spec_tokens: dict[str, list[int]], probs: dict[str, np.ndarray]) -> None:
        self.step.begin([
            TreeRequest(rid, len(tokens), _as_tensor(probs.get(rid), len(tokens)))
            for rid, tokens in spec_tokens.items() if tokens
        ])

    def _after_prepare_inputs(self) -> None:
        if self.step.requests:
            runner = self.runner
            self.step.locate(
                runner.input_batch.req_id_to_index, _vllm_compat.query_start(runner),
                _vllm_compat.positions(runner),
            )

    def _sample(self, chain_sampler, metadata, draft_probs, logits, sampling_metadata):
        """vLLM's rejection sampler for every row, then the tree rows' own verdict."""
        if not self.step.requests:
            return chain_sampler(metadata, draft_probs, logits, sampling_metadata)
        tree_logits = self._tree_logits(metadata, logits)
        output = chain_sampler(metadata, draft_probs, logits, sampling_metadata)
        sampled = output.sampled_token_ids  # [num_reqs, max_spec_len + 1]
        paths = []
        for req, rows in zip(self.step.requests, tree_logits):
            tokens = metadata.draft_token_ids[_draft_slice(metadata, req)].tolist()
            accepted, final = self._walk(req, tokens, rows, sampling_metadata)
            emitted = [tokens[i] for i in accepted] + [final]
            sampled[req.row].fill_(_vllm_compat.PLACEHOLDER_TOKEN_ID)
            sampled[req.row, : len(emitted)] = torch.tensor(emitted, dtype=sampled.dtype)
            paths.append(accepted)
        self.step.compact(paths)
        return output

    def _tree_logits(self, metadata, logits) -> list[torch.Tensor]:
        """Each tree's target logits [M + 1, V] (root, then nodes), copied
        before vLLM's sampler may scale ``logits`` in place."""
        ends = metadata.cu_num_sampled_tokens.tolist()
        return [logits[ends[r.row] - r.num_nodes - 1 : ends[r.row]].clone() for r in self.step.requests]

    def _walk(self, req: TreeRequest, tokens, rows, sampling_metadata) -> tuple[list[int], int]:
        tree, m = self.step.tree, req.num_nodes
        temperature = _temperature(sampling_metadata, req.row)
        if temperature == 0.0:
            return verify_tree_greedy(tree, m, tokens, rows.argmax(dim=-1).tolist())
        probs = _target_probs(rows.float(), temperature, sampling_metadata, req.row)  # [M+1, V]
        generator = sampling_metadata.generators.get(req.row)
        return verify_tree(tree, m, tokens, probs, req.draft_probs, self.replacement, generator)


def _wrap_attention(impl, step: TreeStep) -> None:
    original = impl.forward

    def forward(layer, query, key, value, kv_cache, attn_metadata, output, *args, **kwargs):
        result = original(layer, query, key, value, kv_cache, attn_metadata, output, *args, **kwargs)
        if step.requests and attn_metadata is not None:
            step.attend(impl, layer, query, key, value, kv_cache, attn_metadata, output)
        return result

    impl.forward = forward


def _draft_slice(metadata, req: TreeRequest) -> slice:
    end = int(metadata.cu_num_draft_tokens[req.row])
    return slice(end - req.num_nodes, end)


def _temperature(sampling_metadata, row: int) -> float:
    if sampling_metadata.all_greedy or sampling_metadata.temperature is None:
        return 0.0
    return float(sampling_metadata.temperature[row])


def _target_probs(rows, temperature: float, sampling_metadata, row: int) -> torch.Tensor:
    """The target's sampling distribution at each row, as vLLM's sampler draws it."""
    logits = rows / temperature
    n = logits.shape[0]
    top_k = None if sampling_metadata.top_k is None else sampling_metadata.top_k[row].expand(n)
    top_p = None if sampling_metadata.top_p is None else sampling_metadata.top_p[row].expand(n)
    logits = _vllm_compat.apply_top_k_top_p(logits, top_k, top_p)
    return torch.softmax(logits, dim=-1)


def _as_tensor(probs: np.ndarray | None, num_nodes: int) -> torch.Tensor | None:
    return None if probs is None else torch.from_numpy(np.ascontiguousarray(probs[:num_nodes]))


def tree_unsupported_reason(params) -> str | None:
    """Why a request's sampling cannot be tree-verified exactly, or None."""
    checks = {
        "logprobs": params.logprobs is not None,
        "penalties": params.presence_penalty != 0 or params.frequency_penalty != 0
        or params.repetition_penalty != 1,
        "min_p": params.min_p > 0,
        "min_tokens": params.min_tokens > 0,
        "logit_bias / allowed_token_ids / bad_words": bool(
            params.logit_bias or params.allowed_token_ids or params.bad_words
        ),
        "structured outputs": params.structured_outputs is not None,
    }
    return next((name for name, hit in checks.items() if hit), None)
