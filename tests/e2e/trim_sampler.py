"""SEED with confidence trimming forced hard, in a fresh process: each draft
is cut before its first token whose confidence is below CUT, so many drafts
are verified in part and many are cut to nothing (a plain step).

The cut is a rule of the same kind as adaptive.py's (it reads only the
confidences of the tokens up to the one it keeps), set to a fixed threshold
so that the lossless tests see many cuts whatever the measured costs say.
With a fifth argument "peek", the cut reads each sampled token's own draft
probability instead (``peeking_take``): the rule that is not lossless.
In-process engine core (VLLM_ENABLE_V1_MULTIPROCESSING=0), so the scheduler
patched here is the one that runs. Writes greedy outputs, samples and the
counts of drafts cut whole, in part and to nothing, as JSON."""

import json
import os
import sys

CUT = 0.5  # cut a draft before its first token at most this sure
CUTS = {"whole": 0, "part": 0, "nothing": 0}  # drafts kept whole, cut in part, cut to nothing


def cut_at_low_confidence(self, confidence, temperature, num_decoding):
    keep = next((i for i, conf in enumerate(confidence) if conf <= CUT), len(confidence))
    CUTS["whole" if keep == len(confidence) else "part" if keep else "nothing"] += 1
    return keep


def peeking_take(take):
    """SeedRounds.take whose sampled drafts carry each token's own draft
    probability as its confidence: a cut by it looks at the token drawn, not
    only at the distribution it was drawn from, and is not lossless (the
    power check of the distribution test)."""
    def peek(self, req_id):
        draft = take(self, req_id)
        if draft.probs is not None:
            draft.confidence = [float(row[tok]) for row, tok in zip(draft.probs, draft.token_ids)]
        return draft
    return peek


if __name__ == "__main__":
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    from vllm import LLM

    import vllm_seed
    from tests.conftest import DRAFT_DIR, TARGET_DIR
    from tests.e2e.conftest import ENGINE_KW, NUM_SPEC_TOKENS
    from tests.e2e.sampling import greedy, greedy_workload, sample_tokens
    from vllm_seed.adaptive import AdaptiveSpeculation

    from vllm_seed.rounds import SeedRounds

    AdaptiveSpeculation.trim_length = cut_at_low_confidence
    if sys.argv[4:] == ["peek"]:
        SeedRounds.take = peeking_take(SeedRounds.take)

    out, temperatures, n = sys.argv[1], [float(t) for t in sys.argv[2].split(",") if t], int(sys.argv[3])
    llm = LLM(
        model=str(TARGET_DIR), **ENGINE_KW,
        **vllm_seed.seed_llm_kwargs(str(DRAFT_DIR), NUM_SPEC_TOKENS, num_drafters=2, adaptive=False),
    )
    result = {"greedy": greedy(llm, *greedy_workload(12))}
    result["greedy_cuts"] = dict(CUTS)
    for t in temperatures:
        CUTS.update(dict.fromkeys(CUTS, 0))
        result[f"samples_{t:g}"] = sample_tokens(llm, t, n, seed0=100_000)
        result[f"cuts_{t:g}"] = dict(CUTS)
    with open(out, "w") as f:
        json.dump(result, f)
