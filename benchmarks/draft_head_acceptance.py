"""Does the drafter's int8 LM head (draft_model.Int8Head) cost acceptance?

Greedy agreement with the target and T=1 expected acceptance, mean of
sum(min(p, q)), of the SmolLM2 draft run by the SEED drafter with its LM head
in int8 and in float32, along the target's greedy continuations (60 tokens)
of held-out GSM8K test questions in the ToT thought prompt. Also how often
the target's token is among the draft's top k (k = 1 is greedy agreement):
what k candidates per level of a greedy token tree can accept, and how often
a guess among the draft's top k of the token the target emits next is right.

    .venv/bin/python benchmarks/draft_head_acceptance.py [NUM_QUESTIONS] > benchmarks/results/draft_head_acceptance.json
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benchmarks" / "models"))
from distill_smollm2 import chat_ids, load_questions, question_prompts  # noqa: E402

from vllm_seed.draft_model import DraftLM  # noqa: E402

PAIR = REPO / "benchmarks" / "models" / "smollm2"
MAX_NEW_TOKENS = 60
TOP_K = (2, 3, 4)


def target_continuation(
    target, ids: list[int], max_new_tokens: int = MAX_NEW_TOKENS
) -> tuple[list[int], torch.Tensor]:
    """The target's greedy continuation and its T=1 distributions p [N, V]."""
    with torch.inference_mode():
        out = target.generate(torch.tensor([ids]), max_new_tokens=max_new_tokens, do_sample=False,
                              output_scores=True, return_dict_in_generate=True)
    return out.sequences[0, len(ids):].tolist(), torch.softmax(torch.stack(out.scores)[:, 0], -1)


def draft_logits(lm: DraftLM, ids: list[int], cont: list[int]) -> torch.Tensor:
    """The drafter's logits [N, V] before each continuation token, fed one by one as it drafts."""
    rows = [lm.forward([0], [0], [ids])[0]]
    for j, token in enumerate(cont[:-1]):
        rows.append(lm.forward([0], [len(ids) + j], [[token]])[0])
    return torch.stack(rows)


def main(num_questions: int) -> dict:
    torch.set_num_threads(2)
    tok = AutoTokenizer.from_pretrained(PAIR / "target")
    target = AutoModelForCausalLM.from_pretrained(PAIR / "target", dtype=torch.float32)
    lms = {h: DraftLM(str(PAIR / "draft"), 2048, slots=1, head=h) for h in ("float32", "int8")}
    agree, accept, positions = {h: 0 for h in lms}, {h: 0.0 for h in lms}, 0
    in_top = {h: {k: 0 for k in TOP_K} for h in lms}
    for question in load_questions("test")[200:200 + num_questions]:
        ids = chat_ids(tok, question_prompts(question, None, None)["thought"])
        cont, p = target_continuation(target, ids)
        positions += len(cont)
        for h, lm in lms.items():
            logits = draft_logits(lm, ids, cont)
            top = logits.topk(max(TOP_K), dim=-1).indices  # [N, K], best first
            hit = top == torch.tensor(cont)[:, None]
            agree[h] += int(hit[:, 0].sum())
            accept[h] += float(torch.minimum(p, torch.softmax(logits, -1)).sum())
            for k in TOP_K:
                in_top[h][k] += int(hit[:, :k].any(-1).sum())
    return {"questions": num_questions, "prompt": "ToT thought", "max_new_tokens": MAX_NEW_TOKENS,
            **{h: {"positions": positions, "greedy_agreement": round(agree[h] / positions, 4),
                   "expected_acceptance_t1": round(accept[h] / positions, 4),
                   "target_token_in_draft_top_k": {k: round(in_top[h][k] / positions, 4) for k in TOP_K}}
               for h in lms}}


if __name__ == "__main__":
    print(json.dumps(main(int(sys.argv[1]) if len(sys.argv) > 1 else 12), indent=1))
