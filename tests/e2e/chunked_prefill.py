"""Seeded requests whose prefills are chunked. As a script: the same requests in a
fresh process (so a patch disabled by env stays off), tokens printed as JSON."""

import json
import os

MAX_NUM_BATCHED_TOKENS = 128  # every prompt below is longer: its prefill takes 2+ steps
NUM_REQUESTS = 6
MAX_TOKENS = 8


def long_prompts() -> list[str]:
    """NUM_REQUESTS prompts of 199-288 tokens: five GSM8K questions each."""
    from tests.e2e.sampling import gsm8k_prompts

    questions = gsm8k_prompts(5 * NUM_REQUESTS)
    return [" ".join(questions[i : i + 5]) for i in range(0, len(questions), 5)]


def chunked_llm():
    """An engine like the shared ones, but with a token budget below every prompt."""
    from vllm import LLM

    from tests.conftest import TARGET_DIR
    from tests.e2e.conftest import ENGINE_KW

    return LLM(model=str(TARGET_DIR), **{**ENGINE_KW, "max_num_batched_tokens": MAX_NUM_BATCHED_TOKENS})


def seeded_tokens(llm) -> list[list[int]]:
    """One batch: prompt i sampled at T=1 with seed i."""
    from vllm import SamplingParams

    params = [
        SamplingParams(temperature=1.0, max_tokens=MAX_TOKENS, seed=i, ignore_eos=True)
        for i in range(NUM_REQUESTS)
    ]
    outs = llm.generate(long_prompts(), params, use_tqdm=False)
    return [list(o.outputs[0].token_ids) for o in outs]


if __name__ == "__main__":
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    print(json.dumps(seeded_tokens(chunked_llm())))
