"""Runs a SEED token-tree engine in a fresh process and writes what it produced.

One engine per tree shape, each in its own process, so the session never
holds more than one of them (their Ray drafters and KV caches) at a time.
Usage: python -m tests.e2e.tree_engine OUT.json '{"k_config": [2, 2, 1]}' T [T ...]
(a "block_size" key goes to the engine, not to SEED: the KV block size in tokens).
"""

import json
import os
import sys

NUM_SAMPLES = 400


def cached_but_last_token(llm) -> list[list[int]]:
    """T=1 replies to a prompt whose KV blocks are cached but for its last
    token: vLLM pads such a request with placeholder drafts unless the
    scheduler turns that off (a tree draft without q fails the step)."""
    from vllm import SamplingParams

    block = llm.llm_engine.vllm_config.cache_config.block_size
    prompt = {"prompt_token_ids": list(range(100, 101 + block))}
    # ignore_eos: every reply is 8 tokens unless a step failed. SEED's sampled path (adaptive
    # lengths and cuts follow measured timings) may draw the end of text earlier.
    params = SamplingParams(temperature=1.0, max_tokens=8, seed=1, ignore_eos=True)
    llm.generate([prompt], params, use_tqdm=False)  # caches its full block
    return [list(o.outputs[0].token_ids) for o in llm.generate([prompt, prompt], params, use_tqdm=False)]


if __name__ == "__main__":
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    from vllm import LLM

    import vllm_seed
    from tests.conftest import DRAFT_DIR, TARGET_DIR
    from tests.e2e.conftest import ENGINE_KW
    from tests.e2e.sampling import greedy, greedy_workload, gsm8k_prompts, sample_tokens, spec_counters

    out, seed_config, temperatures = sys.argv[1], json.loads(sys.argv[2]), [float(t) for t in sys.argv[3:]]
    depth = len(seed_config["k_config"])
    engine_kw = dict(ENGINE_KW)
    if "block_size" in seed_config:  # the engine's KV block size, not a SEED setting
        engine_kw["block_size"] = seed_config.pop("block_size")
    llm = LLM(
        model=str(TARGET_DIR), **engine_kw,
        **vllm_seed.seed_llm_kwargs(str(DRAFT_DIR), depth, num_drafters=2, adaptive=False, **seed_config),
    )
    prompts, lengths = greedy_workload()
    result = {
        "greedy": greedy(llm, prompts, lengths),
        "greedy_mixed": greedy(llm, prompts, lengths, extra=gsm8k_prompts(6)),
        "cached_but_last_token": cached_but_last_token(llm),
        "samples": {str(t): sample_tokens(llm, t, NUM_SAMPLES, seed0=100_000) for t in temperatures},
        "counters": spec_counters(llm),
    }
    with open(out, "w") as f:
        json.dump(result, f)
