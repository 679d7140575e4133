"""SEED with confidence trimming forced hard, in a fresh process: each draft
is cut before its first token whose confidence is below CUT, so many drafts
are verified in part and many are cut to nothing (a plain step).

The cut is a rule of the same kind as adaptive.py's (it reads only the
confidences of the tokens up to the one it keeps), set to a fixed threshold
so that the lossless tests see many cuts whatever the measured costs say.
In-process engine core (VLLM_ENABLE_V1_MULTIPROCESSING=0), so the scheduler
patched here is the one that runs. Writes greedy outputs, samples and the
trim counters as JSON."""

import json
import os
import sys

CUT = 0.5  # cut a draft before its first token at most this sure


def cut_at_low_confidence(self, confidence, temperature, num_decoding):
    return next((i for i, conf in enumerate(confidence) if conf <= CUT), len(confidence))


if __name__ == "__main__":
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    from vllm import LLM

    import vllm_seed
    from tests.conftest import DRAFT_DIR, TARGET_DIR
    from tests.e2e.conftest import ENGINE_KW, NUM_SPEC_TOKENS
    from tests.e2e.sampling import greedy, greedy_workload, sample_tokens
    from vllm_seed.adaptive import AdaptiveSpeculation
    from vllm_seed.scheduler import SeedScheduler

    schedulers = []
    make_pool = SeedScheduler._make_pool

    def keep_scheduler(self, vllm_config):
        schedulers.append(self)
        return make_pool(self, vllm_config)

    SeedScheduler._make_pool = keep_scheduler
    AdaptiveSpeculation.trim_length = cut_at_low_confidence

    out, temperatures, n = sys.argv[1], [float(t) for t in sys.argv[2].split(",") if t], int(sys.argv[3])
    llm = LLM(
        model=str(TARGET_DIR), **ENGINE_KW,
        **vllm_seed.seed_llm_kwargs(str(DRAFT_DIR), NUM_SPEC_TOKENS, num_drafters=2, adaptive=False),
    )
    stats = schedulers[0].rounds.stats
    result = {"greedy": greedy(llm, *greedy_workload(12))}
    counters = ("trimmed_tokens", "trimmed_drafts", "drafts_verified")
    result["greedy_counts"] = {name: getattr(stats, name) for name in counters}
    for t in temperatures:
        before = {name: getattr(stats, name) for name in counters}
        result[f"samples_{t:g}"] = sample_tokens(llm, t, n, seed0=100_000)
        result[f"counts_{t:g}"] = {name: getattr(stats, name) - before[name] for name in counters}
    with open(out, "w") as f:
        json.dump(result, f)
