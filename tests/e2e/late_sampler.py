"""SEED with every draft one step late, in a fresh process: each round's
branch decodes a plain token meanwhile, and the rest of its draft is verified
at the next step if it begins with that token (rounds.catch_up).

In-process engine core (VLLM_ENABLE_V1_MULTIPROCESSING=0), so the scheduler
patched here is the one that runs: its pool hands each drafter call's result
over one engine step after the call was made, however fast the drafter was,
and every late branch decodes meanwhile with a draft one token longer.
Writes greedy outputs, samples and the late-draft counters as JSON."""

import json
import os
import sys

LATE_TOKENS = 8  # per sample: rounds of a late step and a verify step, three and more


class OneStepLatePool:
    """A DrafterPool whose finished drafts are admitted one engine step late."""

    def __init__(self, pool, scheduler):
        self.pool, self.scheduler, self.landed = pool, scheduler, []

    def poll(self, timeout_s, job_timeout_s=float("inf")):
        step = self.scheduler.adaptive.step
        while self.pool.in_flight:  # every draft in flight lands during this step...
            batches, failed = self.pool.poll(5.0, job_timeout_s)
            assert not failed, failed
            self.landed += [(step, batch) for batch in batches]
        ready = [batch for at, batch in self.landed if at < step]  # ... and is admitted at the next
        self.landed = [(at, batch) for at, batch in self.landed if at == step]
        return ready, []

    def __getattr__(self, name):
        return getattr(self.pool, name)


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

    def one_step_late_pool(self, vllm_config):
        schedulers.append(self)
        return OneStepLatePool(make_pool(self, vllm_config), self)

    SeedScheduler._make_pool = one_step_late_pool
    SeedScheduler._lands_during_step = lambda self, rid, num_decoding: True
    SeedScheduler._late_tokens = lambda self, drafter, dispatched, num_decoding: 1

    out, temperatures, n = sys.argv[1], [float(t) for t in sys.argv[2].split(",")], int(sys.argv[3])
    llm = LLM(
        model=str(TARGET_DIR), **ENGINE_KW,
        **vllm_seed.seed_llm_kwargs(str(DRAFT_DIR), NUM_SPEC_TOKENS, num_drafters=2, adaptive=False),
    )
    result = {"greedy": greedy(llm, *greedy_workload(12))}
    stats = schedulers[0].rounds.stats
    result["greedy_late_drafts_verified"] = stats.late_drafts_verified
    for t in temperatures:
        before = stats.late_drafts_verified
        result[f"samples_{t:g}"] = sample_tokens(llm, t, n, seed0=100_000, tokens=LATE_TOKENS)
        result[f"late_drafts_verified_{t:g}"] = stats.late_drafts_verified - before
    result["held_back_steps"] = stats.held_back_steps
    with open(out, "w") as f:
        json.dump(result, f)
