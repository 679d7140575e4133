"""How well does a draft token's confidence predict its acceptance?

Confidence trimming (vllm_seed/adaptive.py) verifies a draft token only if
its confidence, the largest probability of the draft distribution it was
drawn from, says it is likely enough to be accepted. This measures that
link for the SmolLM2 pair: along the target's greedy continuations (100
tokens) of held-out GSM8K test questions, in the ToT thought prompt and as
the bare question, each position's draft confidence (the drafter's softmax
at T=1, int8 head, fed token by token as it drafts) against greedy agreement
with the target and the T=1 expected acceptance sum(min(p, q)), by
confidence bin.

    .venv/bin/python benchmarks/draft_confidence.py [NUM_QUESTIONS] > benchmarks/results/draft_confidence.json
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benchmarks"))
from draft_head_acceptance import (  # noqa: E402
    PAIR, chat_ids, draft_logits, load_questions, question_prompts, target_continuation,
)

from vllm_seed.draft_model import DraftLM  # noqa: E402

MAX_NEW_TOKENS = 100
BINS = 10


def main(num_questions: int) -> dict:
    torch.set_num_threads(2)
    tok = AutoTokenizer.from_pretrained(PAIR / "target")
    target = AutoModelForCausalLM.from_pretrained(PAIR / "target", dtype=torch.float32)
    lm = DraftLM(str(PAIR / "draft"), 2048, slots=1, head="int8")
    rows = []  # (confidence, greedy agreement, sum(min(p, q)))
    for question in load_questions("test")[100:100 + num_questions]:
        for kind in ("thought", "direct"):
            ids = chat_ids(tok, question_prompts(question, None, None)[kind])
            cont, p = target_continuation(target, ids, MAX_NEW_TOKENS)
            with torch.inference_mode():
                q = torch.softmax(draft_logits(lm, ids, cont), -1)
            agree = (q.argmax(-1) == torch.tensor(cont)).float()
            rows += zip(q.amax(-1).tolist(), agree.tolist(), torch.minimum(p, q).sum(-1).tolist())
    bins = []
    for b in range(BINS):
        sel = [r for r in rows if min(int(r[0] * BINS), BINS - 1) == b]
        bins.append({"confidence": [b / BINS, (b + 1) / BINS], "share": len(sel) / len(rows),
                     "greedy_agreement": sum(r[1] for r in sel) / len(sel) if sel else None,
                     "t1_expected_acceptance": sum(r[2] for r in sel) / len(sel) if sel else None})
    return {"questions": num_questions, "positions": len(rows),
            "greedy_agreement": sum(r[1] for r in rows) / len(rows),
            "t1_expected_acceptance": sum(r[2] for r in rows) / len(rows), "bins": bins}


if __name__ == "__main__":
    print(json.dumps(main(int(sys.argv[1]) if len(sys.argv) > 1 else 12), indent=1))
