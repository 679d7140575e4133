"""The SmolLM2 draft's distillation (benchmarks/models/distill_smollm2.py): its
vocabulary is the completions' most frequent tokens, and its loss sees the
target's labels only where the draft can propose them."""

import math
import sys

import pytest
import torch

from tests.conftest import REPO, make_random_llama

sys.path.insert(0, str(REPO / "benchmarks" / "models"))
from distill_smollm2 import Batch, DraftVocab, distill_loss, frequent_tokens  # noqa: E402


def test_frequent_tokens_are_the_most_frequent_ties_to_the_lower_id():
    records = [{"output": [5, 5, 5, 9, 9, 2, 7]}, {"output": [7, 3]}]
    assert frequent_tokens(records, 3) == [5, 7, 9]  # 9 and 7 twice; 2 and 3 once
    assert frequent_tokens(records, 4) == [2, 5, 7, 9]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    from transformers import LlamaForCausalLM

    model = LlamaForCausalLM.from_pretrained(make_random_llama(tmp_path_factory.mktemp("llama")))
    model.lm_head.weight = model.model.embed_tokens.weight  # tied, as the SmolLM2 draft
    return model


def record(prompt, output, top_ids, top_lp):
    return {"prompt": prompt, "output": output, "top_ids": torch.tensor(top_ids, dtype=torch.int32),
            "top_lp": torch.tensor(top_lp, dtype=torch.float16)}


def test_the_loss_renormalises_the_labels_over_the_draft_vocab(model):
    vocab = DraftVocab([3, 4, 8, 10], 64)
    ninf = -math.inf
    batch = Batch([record([1, 2], [4, 50, 8],
                          top_ids=[[4, 9, 3], [50, 51, 0], [8, 10, 60]],
                          top_lp=[[-0.5, -1.0, -2.0], [-0.1, -3.0, ninf], [-1.0, -1.0, -0.2]])])
    with torch.no_grad():
        log_q = torch.log_softmax(model(input_ids=batch.ids).logits[0][:, vocab.ids], dim=-1)
        got = distill_loss(model, batch, vocab, hard_weight=0.5)
    rows = log_q[1:4]  # positions predicting the 3 output tokens
    row = {4: 1, 8: 2, 3: 0, 10: 3}
    # position 0: labels 4 and 3 (9 is not the draft's), renormalised
    p0 = torch.softmax(torch.tensor([-0.5, -2.0]), 0)
    soft0 = -(p0[0] * rows[0, row[4]] + p0[1] * rows[0, row[3]])
    # position 1: no label is the draft's: no soft label, and its token 50 no hard one
    p2 = torch.softmax(torch.tensor([-1.0, -1.0]), 0)  # 60 is not the draft's
    soft2 = -(p2[0] * rows[2, row[8]] + p2[1] * rows[2, row[10]])
    hard = -(rows[0, row[4]] + rows[2, row[8]]) / 2
    want = (soft0 + soft2) / 3 + 0.5 * hard
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
