"""Measure the embedded pair: quality, cost per forward, draft/target agreement, vLLM loading.

    VLLM_CPU_KVCACHE_SPACE=1 python benchmarks/models/evaluate_pair.py [--parts quality,cost,vllm]

Writes pair_metrics.json next to this file. Everything runs in float32 on GSM8K test, which
neither model was trained on. Definitions, over the target's greedy continuations:
  greedy agreement     fraction of positions where argmax q == argmax p (q draft, p target);
  expected acceptance  mean of sum_v min(p_v, q_v): the chance that speculative sampling at
                       T=1 accepts a draft token sampled from q.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (DRAFT_DIR, METRICS_PATH, TARGET_DIR, encode_docs, example_text,  # noqa: E402
                    load_model, load_split, load_tokenizer, num_params, pack, prompt_text,
                    setup_torch)

CACHE_LEN = 200  # tokens already in the KV cache for the decode-step timing
PREFILL_LEN = 128
NUM_SAMPLE_QUESTIONS = 2
DIRS = {"target": TARGET_DIR, "draft": DRAFT_DIR}


def val_loss(model, rows: torch.Tensor, chunk: int = 16) -> float:
    """Mean next-token cross-entropy over packed test rows [N, S]."""
    total, count = 0.0, 0
    for i in range(0, len(rows), chunk):
        ids = rows[i: i + chunk]
        logits = model(input_ids=ids).logits[:, :-1]  # [B, S-1, V]
        total += torch.nn.functional.cross_entropy(
            logits.flatten(0, 1), ids[:, 1:].flatten(), reduction="sum").item()
        count += ids[:, 1:].numel()
    return total / count


def decode_step_fn(model, batch_size: int):
    """One single-token forward against a CACHE_LEN-token KV cache, which is cropped back so
    that every timed call sees the same cache length."""
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(2, model.config.vocab_size, (batch_size, CACHE_LEN + 1), generator=gen)
    cache = model(input_ids=ids[:, :CACHE_LEN], use_cache=True).past_key_values

    def step():
        model(input_ids=ids[:, CACHE_LEN:], past_key_values=cache, use_cache=True)
        cache.crop(-1)  # drop the token just appended
    return step


def prefill_fn(model):
    ids = torch.randint(2, model.config.vocab_size, (1, PREFILL_LEN),
                        generator=torch.Generator().manual_seed(0))
    return lambda: model(input_ids=ids)


def time_pair(fns: dict, num_warmup: int, num_reps: int) -> dict:
    """Median milliseconds per call. The models take turns call by call, so CPU contention
    from other processes hits both alike and the ratio stays fair."""
    for _ in range(num_warmup):
        for fn in fns.values():
            fn()
    times = {name: [] for name in fns}
    for _ in range(num_reps):
        for name, fn in fns.items():
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    ms = {name: 1e3 * sorted(ts)[len(ts) // 2] for name, ts in times.items()}
    return {**{k: round(v, 3) for k, v in ms.items()},
            "ratio": round(ms["target"] / ms["draft"], 2)}


def forward_costs(models: dict, num_warmup: int, num_reps: int) -> dict:
    settings = {
        "decode_b1_ctx200": lambda m: decode_step_fn(m, 1),
        "decode_b8_ctx200": lambda m: decode_step_fn(m, 8),
        "prefill_b1_128": prefill_fn,
    }
    return {name: time_pair({k: make(m) for k, m in models.items()}, num_warmup, num_reps)
            for name, make in settings.items()}


def greedy(model, prompt: list[int], max_new_tokens: int, eos_id: int) -> list[int]:
    """The greedy continuation of `prompt`; it stops early at EOS."""
    out = model.generate(torch.tensor([prompt]), do_sample=False, max_new_tokens=max_new_tokens,
                         pad_token_id=eos_id)
    return out[0, len(prompt):].tolist()


def agreement(target, draft, prompts: list[list[int]], max_new_tokens: int, eos_id: int) -> dict:
    """Greedy agreement and T=1 expected acceptance along the target's greedy paths."""
    num_agree, accept_sum, num_positions, num_self_mismatch = 0, 0.0, 0, 0
    for prompt in prompts:
        cont = greedy(target, prompt, max_new_tokens, eos_id)
        ids = torch.tensor([prompt + cont])
        # Logits at positions len(prompt)-1 ... end-1 predict the continuation tokens.
        span = slice(len(prompt) - 1, len(prompt) - 1 + len(cont))
        p = target(input_ids=ids).logits[0, span].softmax(-1)  # [T, V]
        q_ = draft(input_ids=ids).logits[0, span].softmax(-1)  # [T, V]
        num_agree += (p.argmax(-1) == q_.argmax(-1)).sum().item()
        accept_sum += torch.minimum(p, q_).sum(-1).sum().item()
        num_positions += len(cont)
        # Sanity check: a full forward should reproduce the cached greedy path.
        num_self_mismatch += (p.argmax(-1) != torch.tensor(cont)).sum().item()
    return {"num_prompts": len(prompts), "num_positions": num_positions,
            "greedy_agreement": round(num_agree / num_positions, 4),
            "expected_acceptance_t1": round(accept_sum / num_positions, 4),
            "target_self_mismatches": num_self_mismatch}


def dir_size(model_dir: Path) -> dict:
    return {f.name: f.stat().st_size for f in sorted(model_dir.iterdir()) if f.is_file()}


def load_pair() -> tuple[object, dict]:
    setup_torch()
    return load_tokenizer(TARGET_DIR), {name: load_model(d) for name, d in DIRS.items()}


def quality_metrics(args) -> dict:
    """Test loss of both models, draft/target agreement and two sample answers."""
    tokenizer, models = load_pair()
    test = load_split("test")
    rows = pack(encode_docs(tokenizer, [example_text(e) for e in test]), seed=None)
    questions = [e["question"] for e in test[: args.num_questions]]
    out: dict = {"models": {}}
    with torch.inference_mode():
        for name, model in models.items():
            out["models"][name] = {
                "num_params": num_params(model), "files": dir_size(DIRS[name]),
                "val_loss": round(val_loss(model, rows), 4), "num_val_tokens": rows.numel()}
            log(f"{name}: {out['models'][name]}")
        prompts = [tokenizer(prompt_text(q))["input_ids"] for q in questions]
        out["agreement"] = agreement(models["target"], models["draft"], prompts,
                                     args.new_tokens, tokenizer.eos_token_id)
        log(f"agreement: {out['agreement']}")
        out["samples"] = [
            {"question": q, "target_greedy": tokenizer.decode(
                greedy(models["target"], prompt, 256, tokenizer.eos_token_id),
                skip_special_tokens=False)}
            for q, prompt in zip(questions, prompts[:NUM_SAMPLE_QUESTIONS])]
    return out


def cost_metrics(args) -> dict:
    _, models = load_pair()
    with torch.inference_mode():
        out = {"machine": machine(), "cost_ms": forward_costs(models, args.num_warmup,
                                                               args.num_reps)}
    log(f"cost per forward (ms): {out['cost_ms']}")
    return out


def vllm_metrics(args) -> dict:
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB; the CPU backend's KV size
    questions = [e["question"] for e in load_split("test")[:NUM_SAMPLE_QUESTIONS]]
    return {"vllm": {name: vllm_check(d, questions, args.new_tokens)
                     for name, d in DIRS.items()}}


def vllm_check(model_dir: Path, questions: list[str], max_new_tokens: int) -> dict:
    """Greedy outputs of vLLM and HF for the same prompts, token for token."""
    from vllm import LLM, SamplingParams

    # Eager mode: torch.compile adds minutes on a busy 2-core machine and this is a load
    # and equality check, not a speed test.
    llm = LLM(model=str(model_dir), dtype="float32", max_model_len=1024, seed=0,
              enforce_eager=True)
    params = SamplingParams(temperature=0.0, max_tokens=max_new_tokens)
    outs = llm.generate([prompt_text(q) for q in questions], params)
    vllm_ids = [list(o.outputs[0].token_ids) for o in outs]
    del llm
    gc.collect()
    tokenizer, model = load_tokenizer(model_dir), load_model(model_dir)
    with torch.inference_mode():
        hf_ids = [greedy(model, tokenizer(prompt_text(q))["input_ids"], max_new_tokens,
                         tokenizer.eos_token_id) for q in questions]
    for v, h in zip(vllm_ids, hf_ids):
        print(f"[{model_dir.name}] vLLM: {v}\n[{model_dir.name}]   HF: {h}", flush=True)
    return {"match": vllm_ids == hf_ids, "vllm": vllm_ids, "hf": hf_ids,
            "vllm_text": [tokenizer.decode(v) for v in vllm_ids]}


def machine() -> dict:
    return {"cpu": platform.processor() or platform.machine(), "num_threads":
            torch.get_num_threads(), "torch": torch.__version__, "dtype": "float32"}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--num-questions", type=int, default=50)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--num-warmup", type=int, default=5)
    parser.add_argument("--num-reps", type=int, default=40)
    parser.add_argument("--parts", default=",".join(PARTS),
                        help=f"comma-separated subset of {list(PARTS)}; each part updates "
                             "its keys of an existing pair_metrics.json")
    return parser.parse_args()


PARTS = {"quality": quality_metrics, "cost": cost_metrics, "vllm": vllm_metrics}

if __name__ == "__main__":  # vLLM spawns processes: keep its use behind the main guard
    args = parse_args()
    metrics = json.loads(METRICS_PATH.read_text()) if METRICS_PATH.exists() else {}
    for part in args.parts.split(","):
        metrics.update(PARTS[part](args))
        # Written after every part, so a failure later keeps what was measured.
        METRICS_PATH.write_text(json.dumps(metrics, indent=1) + "\n")
        log(f"{part}: wrote {METRICS_PATH}")
