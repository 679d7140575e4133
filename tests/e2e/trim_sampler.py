"""SEED with confidence trimming forced hard, in a fresh process: each draft
is cut before its first token whose confidence is at most CUT's, so many
drafts are verified in part and many are cut to nothing (a plain step).

The cut is a rule of the same kind as adaptive.py's (it reads only the
confidences of the tokens up to the one it keeps), set to fixed thresholds
so that the lossless tests see many cuts whatever the measured costs say.
In-process engine core (VLLM_ENABLE_V1_MULTIPROCESSING=0), so the scheduler
patched here is the one that runs. Writes greedy outputs, samples and the
counts of drafts cut whole, in part and to nothing, as JSON."""

import json
import os
import sys

# Cut thresholds by temperature, (first token, later tokens), from this pair's token
# confidences (10th to 90th percentile 0.08-0.56 at T=0, 0.84-1.0 at T=0.2, 0.02-0.46 at T=1):
# a draft is cut to nothing if its first token is at most the first threshold sure, else
# before its first later token at most the second, so drafts are cut whole, in part and to
# nothing at every temperature.
CUT = {0.0: (0.08, 0.12), 0.2: (0.85, 0.995), 1.0: (0.03, 0.075)}
TOKENS = 8  # per sample: several rounds each
CUTS = {"whole": 0, "part": 0, "nothing": 0}  # drafts kept whole, cut in part, cut to nothing


def cut_at_low_confidence(self, confidence, temperature, num_decoding):
    first, rest = CUT[temperature]
    keep = next((i for i, conf in enumerate(confidence) if conf <= (rest if i else first)), len(confidence))
    CUTS["whole" if keep == len(confidence) else "part" if keep else "nothing"] += 1
    return keep


if __name__ == "__main__":
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    from vllm import LLM

    import vllm_seed
    from tests.conftest import DRAFT_DIR, TARGET_DIR
    from tests.e2e.conftest import ENGINE_KW, NUM_SPEC_TOKENS
    from tests.e2e.sampling import greedy, greedy_workload, sample_tokens
    from vllm_seed.adaptive import AdaptiveSpeculation

    AdaptiveSpeculation.trim_length = cut_at_low_confidence

    out, temperatures, n = sys.argv[1], [float(t) for t in sys.argv[2].split(",") if t], int(sys.argv[3])
    llm = LLM(
        model=str(TARGET_DIR), **ENGINE_KW,
        # Every draft NUM_SPEC_TOKENS long, so that each can be cut in part.
        **vllm_seed.seed_llm_kwargs(str(DRAFT_DIR), NUM_SPEC_TOKENS, num_drafters=2, adaptive=False,
                                    adaptive_length=False),
    )
    result = {"greedy": greedy(llm, *greedy_workload(12))}
    result["greedy_cuts"] = dict(CUTS)
    for t in temperatures:
        CUTS.update(dict.fromkeys(CUTS, 0))
        result[f"samples_{t:g}"] = sample_tokens(llm, t, n, seed0=100_000, tokens=TOKENS)
        result[f"cuts_{t:g}"] = dict(CUTS)
    with open(out, "w") as f:
        json.dump(result, f)
