"""Worker side of SEED: draft probabilities q into vLLM's rejection sampler,
or, when ``k_config`` is a token tree, tree verification (tree_verify.py).

The scheduler ships each verified branch's q as
``SchedulerOutput.seed_draft_probs = {req_id: ndarray [n, V]}``; this worker
stacks them into the runner's draft-probability slot before the step, so the
standard rejection sampler accepts x with probability min(1, p(x)/q(x)) and
samples the recovered token from norm(max(0, p - q)). Greedy-drafted rows
get one-hot q (the runner needs a row for every request with drafts).
"""

from __future__ import annotations

import numpy as np
import torch

from vllm_seed import _vllm_compat
from vllm_seed.config import ADDITIONAL_CONFIG_KEY, SeedConfig
from vllm_seed.tree_verify import TreeVerifier


class SeedWorkerMixin:
    _tree_verifier: TreeVerifier | None = None

    def initialize_from_config(self, *args, **kwargs):
        super().initialize_from_config(*args, **kwargs)
        # The attention backend exists now: an unsupported one fails at startup.
        config = SeedConfig.from_dict(self.vllm_config.additional_config[ADDITIONAL_CONFIG_KEY])
        if config.tree is not None:
            self._tree_verifier = TreeVerifier(self.model_runner, config.tree, config.replacement)
        sample_plainly_without_drafts(self.model_runner)

    def execute_model(self, scheduler_output, *args, **kwargs):
        probs = getattr(scheduler_output, "seed_draft_probs", None)
        verifier = self._tree_verifier
        if verifier is not None:
            verifier.begin(scheduler_output.scheduled_spec_decode_tokens, probs or {})
        elif probs:
            req_ids, stacked = stack_draft_probs(
                scheduler_output.scheduled_spec_decode_tokens, probs
            )
            runner = self.model_runner
            _vllm_compat.set_runner_draft_probs(runner, stacked.to(runner.device), req_ids)
        return super().execute_model(scheduler_output, *args, **kwargs)


def sample_plainly_without_drafts(runner) -> None:
    """A step with no drafts samples as plain decoding does.

    With speculative decoding on, vLLM sends every step through the rejection
    sampler; with no drafts it samples the same bonus tokens with the same
    sampler, but first draws a [batch, V] exponential tensor and runs its
    kernels for nothing: 3 ms of a 12 ms step of the tiny target at batch 24
    (cProfile), and SEED's paused branches make many such steps. Steps that
    return logprobs keep the rejection sampler's own logprobs path."""
    sampler = runner.sampler

    def sample(rejection_sampler, metadata, draft_probs, logits, sampling_metadata):
        if metadata.max_spec_len == 0 and sampling_metadata.max_num_logprobs is None:
            return sampler(logits=logits, sampling_metadata=sampling_metadata)  # [B, 1] tokens
        return rejection_sampler(metadata, draft_probs, logits, sampling_metadata)

    _vllm_compat.wrap_rejection_sampler(runner, sample)


def stack_draft_probs(
    spec_tokens: dict[str, list[int]], probs: dict[str, np.ndarray]
) -> tuple[list[str], torch.Tensor]:
    """[R, K, V] draft probabilities for every request with draft tokens."""
    req_ids = list(spec_tokens)
    vocab = next(iter(probs.values())).shape[-1]
    width = max(len(t) for t in spec_tokens.values())
    out = torch.zeros(len(req_ids), width, vocab, dtype=torch.float32)
    for row, rid in enumerate(req_ids):
        tokens = spec_tokens[rid]
        if rid in probs:
            out[row, : len(tokens)] = torch.from_numpy(probs[rid][: len(tokens)])
        else:  # greedy draft: q is one-hot on the drafted token
            out[row, torch.arange(len(tokens)), torch.tensor(tokens)] = 1.0
    return req_ids, out


_CPUWorker, _GPUWorker = _vllm_compat.worker_bases()


class SeedCPUWorker(SeedWorkerMixin, _CPUWorker):
    pass


class SeedGPUWorker(SeedWorkerMixin, _GPUWorker):
    pass
