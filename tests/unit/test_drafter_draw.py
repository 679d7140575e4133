"""The drafter's token draw must follow the q it reports: the rejection
sampler's p/q test is exact only if drafts are drawn from that very q."""

import torch
from scipy.stats import chisquare

from vllm_seed.drafter import draw


def test_draw_follows_q_and_never_draws_a_zero_probability_token():
    q = torch.tensor([0.5, 0.0, 0.2, 0.25, 0.0, 0.05])
    generator = torch.Generator().manual_seed(0)
    counts = torch.bincount(torch.tensor([draw(q, generator) for _ in range(20000)]), minlength=len(q))
    assert counts[1] == 0 and counts[4] == 0
    nonzero = q > 0
    expected = q[nonzero] / q[nonzero].sum() * counts.sum()
    assert chisquare(counts[nonzero].numpy(), expected.numpy())[1] > 1e-3


def test_draw_is_reproducible_under_a_seed():
    q = torch.softmax(torch.randn(49152), dim=-1)
    first = [draw(q, torch.Generator().manual_seed(s)) for s in range(20)]
    assert first == [draw(q, torch.Generator().manual_seed(s)) for s in range(20)]
    assert len(set(first)) > 1
