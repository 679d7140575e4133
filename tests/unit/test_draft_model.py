"""DraftLM (batched, slot-cached) must reproduce transformers' logits exactly."""

import pytest
import torch

from vllm_seed.draft_model import DraftLM, Int8Head


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


def test_branches_in_any_slot_order_match_transformers(random_llama_dir):
    # Slots 2, 0 are not a contiguous run: the forward gathers their caches.
    lm = DraftLM(random_llama_dir, max_len=128, slots=3)
    a, b = [1, 5, 9, 3, 7, 2], [4, 4, 8]
    lm.forward([2, 0], [0, 0], [a[:3], b[:1]])
    out = lm.forward([2, 0], [3, 1], [a[3:], b[1:]])
    torch.testing.assert_close(out[0], hf_last_logits(random_llama_dir, a), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(out[1], hf_last_logits(random_llama_dir, b), atol=1e-4, rtol=1e-4)


def test_int8_head_is_close_to_float32_and_independent_of_the_batch():
    g = torch.Generator().manual_seed(0)
    weight = torch.randn(4096, 64, generator=g) * 0.4  # logits of std ~3, as a LM's
    rows = torch.randn(12, 64, generator=g) * (0.5 + torch.rand(12, 1, generator=g))
    head = Int8Head(weight)
    out = head(rows)
    # Each row's logits are the same bit for bit alone or in any batch.
    alone = torch.cat([head(rows[i : i + 1]) for i in range(len(rows))])
    assert torch.equal(out, alone)
    assert torch.equal(head(rows[[5, 2, 9]]), out[[5, 2, 9]])
    # Close to the float32 head: errors of ~1% of the logits' spread, a small
    # total variation, and its argmax at most a near-tie away from the exact one.
    ref = rows @ weight.T
    spread = ref.std(1, keepdim=True)
    assert ((out - ref).abs() / spread).max() < 0.08
    regret = ref.max(1).values - ref.gather(1, out.argmax(1, keepdim=True))[:, 0]
    assert (regret / spread[:, 0]).max() < 0.05
    tv = 0.5 * (torch.softmax(out, 1) - torch.softmax(ref, 1)).abs().sum(1)
    assert tv.max() < 0.03, tv.max()


def test_draft_with_int8_head_tracks_the_float32_draft(random_llama_dir):
    tokens = [1, 5, 9, 3, 7, 2, 11, 4]
    exact = DraftLM(random_llama_dir, max_len=128, slots=1).forward([0], [0], [tokens])
    fast = DraftLM(random_llama_dir, max_len=128, slots=1, head="int8").forward([0], [0], [tokens])
    tv = 0.5 * (torch.softmax(fast, 1) - torch.softmax(exact, 1)).abs().sum(1)
    assert tv.max() < 0.03, tv.max()
    with pytest.raises(ValueError, match="draft head='bf16' must be one of"):
        DraftLM(random_llama_dir, max_len=128, head="bf16")
