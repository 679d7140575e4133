"""The worker's zero-draft shortcut: plain sampling exactly when nothing is verified."""

from types import SimpleNamespace

import pytest

from vllm_seed.worker import sample_plainly_without_drafts


@pytest.mark.parametrize("max_spec_len, logprobs, expected", [
    (0, None, "plain"), (3, None, "rejection"), (0, 2, "rejection"),
])
def test_only_steps_without_drafts_or_logprobs_skip_the_rejection_sampler(max_spec_len, logprobs, expected):
    calls = []
    runner = SimpleNamespace(
        sampler=lambda logits, sampling_metadata: calls.append("plain") or "plain",
        rejection_sampler=lambda metadata, probs, logits, sm: calls.append("rejection") or "rejection",
    )
    sample_plainly_without_drafts(runner)
    out = runner.rejection_sampler(
        SimpleNamespace(max_spec_len=max_spec_len), None, "logits", SimpleNamespace(max_num_logprobs=logprobs)
    )
    assert out == expected and calls == [expected]
