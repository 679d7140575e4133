"""SEED drafting ahead (rounds.py), in a fresh process: while a branch's
draft is verified, its next round is drafted assuming the whole draft
accepted, and it is verified only if the branch then holds the draft and
the guessed bonus token.

The lossless tests' engine (every round drafts), in-process
(VLLM_ENABLE_V1_MULTIPROCESSING=0), so its scheduler's counters can be read:
writes greedy outputs, samples, and how many drafts drafted ahead served
and were dropped, as JSON."""

import json
import os
import sys

TOKENS = 8  # per sample: several rounds each


def counts(stats) -> dict:
    return {"hits": stats.ahead_hits, "misses": stats.ahead_misses}


if __name__ == "__main__":
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    from vllm import LLM

    import vllm_seed
    from tests.conftest import DRAFT_DIR, TARGET_DIR
    from tests.e2e.conftest import ENGINE_KW, NUM_SPEC_TOKENS
    from tests.e2e.sampling import greedy, greedy_workload, sample_tokens
    from vllm_seed.scheduler import SeedScheduler

    schedulers = []
    make_pool = SeedScheduler._make_pool

    def recording_pool(self, vllm_config):
        schedulers.append(self)
        return make_pool(self, vllm_config)

    SeedScheduler._make_pool = recording_pool

    out, temperatures, n = sys.argv[1], [float(t) for t in sys.argv[2].split(",")], int(sys.argv[3])
    llm = LLM(
        model=str(TARGET_DIR), **ENGINE_KW,
        **vllm_seed.seed_llm_kwargs(str(DRAFT_DIR), NUM_SPEC_TOKENS, num_drafters=2, adaptive=False),
    )
    stats = schedulers[0].rounds.stats
    result = {"greedy": greedy(llm, *greedy_workload(12)), "greedy_ahead": counts(stats)}
    for t in temperatures:
        before = counts(stats)
        result[f"samples_{t:g}"] = sample_tokens(llm, t, n, seed0=100_000, tokens=TOKENS)
        result[f"ahead_{t:g}"] = {k: v - before[k] for k, v in counts(stats).items()}
    with open(out, "w") as f:
        json.dump(result, f)
