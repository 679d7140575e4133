"""Samples from SEED in a fresh process (so env-disabled patches stay off)."""

import json
import os
import sys

if __name__ == "__main__":
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    from vllm import LLM

    import vllm_seed
    from tests.conftest import DRAFT_DIR, TARGET_DIR
    from tests.e2e.conftest import ENGINE_KW, NUM_SPEC_TOKENS
    from tests.e2e.sampling import sample_tokens

    out, temperature, n = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
    llm = LLM(
        model=str(TARGET_DIR), **ENGINE_KW,
        **vllm_seed.seed_llm_kwargs(str(DRAFT_DIR), NUM_SPEC_TOKENS, num_drafters=1),
    )
    with open(out, "w") as f:
        json.dump(sample_tokens(llm, temperature, n, seed0=100_000), f)
