"""DraftLM (batched, slot-cached) must reproduce transformers' logits exactly."""

import torch

from vllm_seed.draft_model import DraftLM


def hf_last_logits(model_dir, tokens):
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    with torch.inference_mode():
        return hf(torch.tensor([tokens])).logits[0, -1]


def test_batched_incremental_forward_matches_transformers(random_llama_dir):
    lm = DraftLM(random_llama_dir, max_len=128, slots=1)
    a, b = [1, 5, 9, 3, 7, 2], [4, 4, 8]
    lm.grow(2)
    # Prefill both branches of different lengths in one batch ...
    lm.forward([0, 1], [0, 0], [a[:4], b])
    # ... then continue them by different numbers of tokens in one batch.
    out = lm.forward([0, 1], [4, 3], [a[4:], [11]])
    torch.testing.assert_close(out[0], hf_last_logits(random_llama_dir, a), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(out[1], hf_last_logits(random_llama_dir, b + [11]), atol=1e-4, rtol=1e-4)


def test_rewinding_a_slot_overwrites_rejected_tokens(random_llama_dir):
    lm = DraftLM(random_llama_dir, max_len=128, slots=1)
    lm.forward([0], [0], [[1, 2, 3, 4, 5]])
    # Tokens 4, 5 were "rejected": continue from 3 cached tokens with others.
    out = lm.forward([0], [3], [[6, 7]])
    torch.testing.assert_close(out[0], hf_last_logits(random_llama_dir, [1, 2, 3, 6, 7]), atol=1e-4, rtol=1e-4)
