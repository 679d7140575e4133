"""Shared pieces of the lossless tests: prompts, sampling, two-sample test."""

import json
import pathlib

REPO = pathlib.Path(__file__).resolve().parents[2]
GSM8K_TEST = REPO / "vllm_seed" / "tot" / "data" / "gsm8k" / "test.jsonl"
DIST_PROMPT = "Question: A baker makes 12 cakes a day. How many cakes does he make in a week?\nAnswer:"
DIST_TOKENS = 4


def gsm8k_prompts(n: int) -> list[str]:
    """n prompts of varied length: whole questions and cut-off ones."""
    with open(GSM8K_TEST) as f:
        questions = [json.loads(line)["question"] for line in f][:n]
    out = []
    for i, q in enumerate(questions):
        words = q.split()
        cut = words if i % 3 == 0 else words[: max(3, len(words) * (i % 3) // 3)]
        out.append(f"Question: {' '.join(cut)}\nAnswer:" if i % 3 == 0 else " ".join(cut))
    return out


def greedy(llm, prompts, lengths, extra=()):
    from vllm import SamplingParams

    params = [SamplingParams(temperature=0, max_tokens=n, ignore_eos=bool(i % 2)) for i, n in enumerate(lengths)]
    # Extra sampled requests share the batch: greedy rows must not notice them.
    params += [SamplingParams(temperature=1.0, max_tokens=32, seed=i) for i in range(len(extra))]
    outs = llm.generate(list(prompts) + list(extra), params, use_tqdm=False)
    return [list(o.outputs[0].token_ids) for o in outs[: len(prompts)]]


def greedy_workload(n: int = 30) -> tuple[list[str], list[int]]:
    """Prompts and output lengths of the greedy token-identity tests."""
    prompts = gsm8k_prompts(n)
    return prompts, [8 + 9 * (i % 8) for i in range(n)]


def sample_tokens(llm, temperature: float, n: int, seed0: int) -> list[list[int]]:
    from vllm import SamplingParams

    params = [
        SamplingParams(temperature=temperature, max_tokens=DIST_TOKENS, seed=seed0 + i, ignore_eos=True)
        for i in range(n)
    ]
    outs = llm.generate([DIST_PROMPT] * n, params, use_tqdm=False)
    return [list(o.outputs[0].token_ids) for o in outs]


def two_sample_pvalues(a: list[list[int]], b: list[list[int]], min_count: int = 10) -> list[float]:
    """Chi-square two-sample p-value per position; rare tokens share one bin."""
    from collections import Counter

    from scipy.stats import chi2_contingency

    pvalues = []
    for pos in range(len(a[0])):
        ca, cb = Counter(s[pos] for s in a), Counter(s[pos] for s in b)
        common = [t for t in set(ca) | set(cb) if ca[t] + cb[t] >= min_count]
        rows = [[ca[t] for t in common], [cb[t] for t in common]]
        rows[0].append(len(a) - sum(rows[0]))
        rows[1].append(len(b) - sum(rows[1]))
        table = [[x for x, y in zip(*rows) if x + y > 0], [y for x, y in zip(*rows) if x + y > 0]]
        pvalues.append(1.0 if len(table[0]) < 2 else float(chi2_contingency(table)[1]))
    return pvalues


def spec_counters(llm) -> dict[str, float]:
    """vllm:spec_decode_* counters of an offline engine."""
    out = {}
    for metric in llm.get_metrics():
        if metric.name.startswith("vllm:spec_decode_num_") and hasattr(metric, "value"):
            out[metric.name] = metric.value
    return out
