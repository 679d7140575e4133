"""A draft that proposes from part of the vocabulary (draft_vocab.json): its
logits are the full head's on those tokens and -inf elsewhere, so its q is a
distribution over the whole vocabulary that is 0 outside them, and the
drafter never proposes a token outside them."""

import json
import shutil

import numpy as np
import pytest
import torch

from tests.conftest import DRAFT_DIR
from vllm_seed.draft_model import DRAFT_VOCAB_FILE, DraftLM
from vllm_seed.drafter import Drafter
from vllm_seed.messages import DraftJob

STORY = [0, 1039, 406, 661, 275, 260, 597, 13, 478, 454, 260, 3893, 3895, 308, 3733, 3337, 15]
VOCAB = 4096
SUBSET = sorted(set(range(0, VOCAB, 3)) | {15, 260})  # a third of the tokens


def with_vocab(tmp_path, token_ids) -> str:
    out = tmp_path / "draft"
    shutil.copytree(DRAFT_DIR, out)
    (out / DRAFT_VOCAB_FILE).write_text(json.dumps({"token_ids": token_ids}))
    return str(out)


@pytest.fixture(scope="module")
def subset_dir(tmp_path_factory):
    return with_vocab(tmp_path_factory.mktemp("subset"), SUBSET)


@pytest.mark.parametrize("head", ["float32", "int8"])
def test_logits_are_the_full_heads_on_the_draft_vocab_and_minus_inf_elsewhere(subset_dir, head):
    full = DraftLM(str(DRAFT_DIR), max_len=128, head=head).forward([0], [0], [STORY])[0]
    part = DraftLM(subset_dir, max_len=128, head=head).forward([0], [0], [STORY])[0]
    inside = torch.zeros(VOCAB, dtype=torch.bool)
    inside[SUBSET] = True
    assert torch.isneginf(part[~inside]).all()
    # int8: each row has its own scale and the input's range is pinned, so the rows are the same
    torch.testing.assert_close(part[inside], full[inside], atol=1e-5, rtol=0)


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_chain_drafts_come_from_the_draft_vocab_with_its_renormalised_q(subset_dir, temperature):
    jobs = [DraftJob(f"r{i}", STORY[: 8 + i], 3, temperature, 100 + i) for i in range(4)]
    drafts = Drafter(subset_dir, max_len=128).draft(jobs).drafts
    lm = DraftLM(str(DRAFT_DIR), max_len=128)
    for job, draft in zip(jobs, drafts):
        assert set(draft.token_ids) <= set(SUBSET)
        if not temperature:
            continue
        context = list(job.token_ids)
        for token, q in zip(draft.token_ids, draft.probs):
            logits = lm.forward([0], [0], [context])[0]
            want = torch.zeros(VOCAB)
            want[SUBSET] = torch.softmax(logits[SUBSET], dim=-1)
            np.testing.assert_allclose(q, want.numpy(), atol=1e-6)
            context.append(token)


@pytest.mark.parametrize("replacement", [True, False])
def test_tree_drafts_come_from_the_draft_vocab(subset_dir, replacement):
    job = DraftJob("t", STORY, 3, 1.0, 7, k_config=(3, 2, 1), replacement=replacement)
    draft = Drafter(subset_dir, max_len=128).draft([job]).drafts[0]
    assert set(draft.token_ids) <= set(SUBSET)
    outside = np.setdiff1d(np.arange(VOCAB), SUBSET)
    assert (draft.probs[:, outside] == 0).all()
    np.testing.assert_allclose(draft.probs.sum(axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize("token_ids, error", [
    ([], "token_ids must be a non-empty list of token ids"),
    ([1, "2"], "token_ids must be a non-empty list of token ids"),
    ([1, VOCAB], f"token id {VOCAB} is outside the draft's vocabulary of {VOCAB}"),
    ([-1, 3], f"token id -1 is outside the draft's vocabulary of {VOCAB}"),
    ([3, 5, 5], "token_ids lists token 5 twice"),
])
def test_a_bad_draft_vocab_names_the_file_and_the_value(tmp_path, token_ids, error):
    bad = with_vocab(tmp_path, token_ids)
    with pytest.raises(ValueError, match=f"{DRAFT_VOCAB_FILE}: {error}"):
        DraftLM(bad, max_len=128)
