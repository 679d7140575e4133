"""The ``custom_class`` proposer SEED registers with vLLM.

SEED's drafts come from the scheduler (drafter actors), not from the worker,
so this proposer proposes nothing; it exists to turn on vLLM's speculative
decoding path (spec slots, rejection sampler, spec-decode metrics).
"""

from __future__ import annotations


class SeedProposer:
    def __init__(self, vllm_config=None) -> None:
        self.vllm_config = vllm_config

    def load_model(self, model) -> None:
        # The CPU runner calls this unconditionally with the target model.
        pass

    def propose(self, sampled_token_ids, num_tokens_no_spec, token_ids_cpu, **_):
        return [[] for _ in sampled_token_ids]
