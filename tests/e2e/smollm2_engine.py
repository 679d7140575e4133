"""Runs one engine on the SmolLM2-135M-Instruct pair in a fresh process and writes its outputs.

One process per engine, so the session holds at most one 135M-parameter target at a time.
Usage: python -m tests.e2e.smollm2_engine OUT.json plain|'{"k_config": [2, 2, 1]}' [T ...]
"""

import json
import os
import sys

from tests.conftest import REPO

PAIR_DIR = REPO / "benchmarks" / "models" / "smollm2"
TARGET_DIR, DRAFT_DIR = PAIR_DIR / "target", PAIR_DIR / "draft"
NUM_SPEC_TOKENS = 3
NUM_PROMPTS = 12
NUM_SAMPLES = 400
# Short, so 400 prefills stay cheap; its next tokens are far from deterministic.
DIST_PROMPT = "Question: Tom has 3 apples and buys 5 more. How many apples"


def chat_prompts(tokenizer, n: int) -> tuple[list[str], list[int]]:
    """n ToT thought prompts on GSM8K test questions in the chat template, and output lengths."""
    from tests.e2e.sampling import GSM8K_TEST
    from vllm_seed.tot.gsm8k import THOUGHT_PROMPT

    with open(GSM8K_TEST) as f:
        questions = [json.loads(line)["question"] for line in f][:n]
    prompts = [tokenizer.apply_chat_template(
        [{"role": "user", "content": THOUGHT_PROMPT.format(question=q, state="")}],
        add_generation_prompt=True, tokenize=False) for q in questions]
    return prompts, [16 + 16 * (i % 4) for i in range(n)]


if __name__ == "__main__":
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    from vllm import LLM, SamplingParams

    import vllm_seed
    from tests.e2e.conftest import ENGINE_KW
    from tests.e2e.sampling import greedy, spec_counters

    out, mode, temperatures = sys.argv[1], sys.argv[2], [float(t) for t in sys.argv[3:]]
    if not (TARGET_DIR / "config.json").is_file():
        sys.exit(f"{TARGET_DIR} is missing: run `make install` (benchmarks/models/build_smollm2.py)")
    seed = {} if mode == "plain" else vllm_seed.seed_llm_kwargs(
        str(DRAFT_DIR), NUM_SPEC_TOKENS, num_drafters=2, adaptive=False, **json.loads(mode))
    llm = LLM(model=str(TARGET_DIR), **{**ENGINE_KW, "max_model_len": 2048}, **seed)
    prompts, lengths = chat_prompts(llm.get_tokenizer(), NUM_PROMPTS)
    result = {
        "greedy": greedy(llm, prompts, lengths),
        "greedy_mixed": greedy(llm, prompts, lengths, extra=prompts[:4]),
        "samples": {},
    }
    seed0 = 0 if mode == "plain" else 100_000  # independent samples of the two engines
    for t in temperatures:
        params = [SamplingParams(temperature=t, max_tokens=4, seed=seed0 + i, ignore_eos=True)
                  for i in range(NUM_SAMPLES)]
        outs = llm.generate([DIST_PROMPT] * NUM_SAMPLES, params, use_tqdm=False)
        result["samples"][str(t)] = [list(o.outputs[0].token_ids) for o in outs]
    result["counters"] = spec_counters(llm)
    with open(out, "w") as f:
        json.dump(result, f)
