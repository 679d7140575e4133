"""Distil a small draft for the SmolLM2-135M-Instruct target (`build_smollm2.py` builds it).

    python benchmarks/models/distill_smollm2.py generate --num-questions 144
    python benchmarks/models/distill_smollm2.py train --steps 1124 --batch-size 16
    python benchmarks/models/distill_smollm2.py generate --start 144 --num-questions 336
    python benchmarks/models/distill_smollm2.py train --init benchmarks/models/smollm2/draft \
        --steps 719 --lr 1e-3 --batch-size 16
    python benchmarks/models/distill_smollm2.py evaluate

(the committed draft's recipe; benchmarks/models/README.md has its times, curves and results).

`generate` serves the target with plain vLLM (float32) and records its own completions of the
prompts the ToT workload sends (GSM8K train questions in the chat template: thought, answer,
evaluation and solution prompts, and the bare question), greedy and at T=1, each token with the
target's top-20 log-probabilities. `train` fits the draft to those soft labels (KL to the
renormalised top-20, plus cross-entropy on the target's token). `evaluate` measures, on held-out
GSM8K *test* questions, the draft's greedy agreement along the target's greedy continuations and
the T=1 expected acceptance sum(min(p, q)), and the cost of one forward of each model.
"""
from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from pathlib import Path

import torch

MODELS_DIR = Path(__file__).resolve().parent
REPO = MODELS_DIR.parents[1]
sys.path[:0] = [str(MODELS_DIR), str(REPO)]
PAIR_DIR = MODELS_DIR / "smollm2"
TARGET_DIR, DRAFT_DIR = PAIR_DIR / "target", PAIR_DIR / "draft"
WORK_DIR = REPO / "benchmarks" / "results" / "tmp" / "smollm2-distill"  # gitignored
DATA_PATH = WORK_DIR / "completions.pt"
CURVES_PATH = PAIR_DIR / "train_curves.json"
METRICS_PATH = PAIR_DIR / "pair_metrics.json"
TOP_K = 20
RECORDS_PER_QUESTION = 15  # 5 prompts (generate_chunk), each greedy + 2 samples
MAX_TOKENS = 100  # the ToT workload's max_tokens
SEED = 1234


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def chat_ids(tokenizer, text: str) -> list[int]:
    """The token ids /v1/chat/completions sends for one user message."""
    return tokenizer.apply_chat_template([{"role": "user", "content": text}],
                                         add_generation_prompt=True, tokenize=True,
                                         return_dict=False)


def question_prompts(question: str, thought: str | None, answer: str | None) -> dict[str, str]:
    """The ToT GSM8K prompts of one question (vllm_seed.tot.gsm8k), given one step."""
    from vllm_seed.tot import gsm8k

    prompts = {"thought": gsm8k.THOUGHT_PROMPT.format(question=question, state=""),
               "direct": question}
    if thought is not None:
        prompts["answer"] = gsm8k.ANSWER_PROMPT.format(question=question, sub_question=thought)
    if answer is not None:
        step = f"{thought}##{answer}"
        prompts["value"] = gsm8k.EVALUATE_PROMPT.format(question=question, sub_question=step,
                                                        answer=answer)
        prompts["solution"] = gsm8k.SOLUTION_PROMPT.format(question=question, state=step)
    return prompts


def load_questions(split: str) -> list[str]:
    path = REPO / "vllm_seed" / "tot" / "data" / "gsm8k" / f"{split}.jsonl"
    return [json.loads(line)["question"] for line in path.read_text().splitlines()]


def record(prompt_ids: list[int], completion) -> dict:
    """One completion: ids, and per output position the target's top-K ids and log-probs."""
    ids = list(completion.token_ids)
    top_ids = torch.zeros(len(ids), TOP_K, dtype=torch.int32)
    top_lp = torch.full((len(ids), TOP_K), -math.inf, dtype=torch.float16)
    for pos, lps in enumerate(completion.logprobs):
        best = sorted(lps.items(), key=lambda kv: kv[1].rank)[:TOP_K]
        top_ids[pos, : len(best)] = torch.tensor([t for t, _ in best], dtype=torch.int32)
        top_lp[pos, : len(best)] = torch.tensor([lp.logprob for _, lp in best])
    return {"prompt": prompt_ids, "output": ids, "top_ids": top_ids, "top_lp": top_lp}


def cmd_generate(args) -> None:
    """Chunks of questions, each saved when done, until the questions or the minutes run out.

    Prefill dominates here (ToT prompts are ~170 tokens in the chat template, replies ~75), so
    every prompt is sampled twice at T=1 besides its greedy reply.
    """
    import os

    # Both cores: vLLM's CPU worker otherwise reserves one and leaves it idle here.
    os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", f"0-{os.cpu_count() - 1}")
    from vllm import LLM

    llm = LLM(model=str(TARGET_DIR), dtype="float32", enforce_eager=True, seed=SEED,
              kv_cache_memory_bytes=2 << 30, max_model_len=2048, max_num_seqs=256)
    questions = load_questions("train")
    random.Random(SEED).shuffle(questions)
    questions = questions[args.start: args.num_questions]
    WORK_DIR.mkdir(parents=True, exist_ok=True)
    records = torch.load(DATA_PATH) if args.start else []
    if len(records) != args.start * RECORDS_PER_QUESTION:
        raise SystemExit(f"--start {args.start}: {DATA_PATH} holds {len(records)} completions, "
                         f"expected {args.start * RECORDS_PER_QUESTION}")
    start = time.perf_counter()
    for i in range(0, len(questions), args.chunk):
        records += generate_chunk(llm, questions[i: i + args.chunk])
        torch.save(records, DATA_PATH)
        tokens = sum(len(r["output"]) for r in records)
        elapsed = time.perf_counter() - start
        log(f"{args.start + i + args.chunk} questions: {len(records)} completions, {tokens} "
            f"output tokens; this run {elapsed:.0f} s -> {DATA_PATH}")
        if elapsed > 60 * args.minutes:
            break


def generate_chunk(llm, questions: list[str]) -> list[dict]:
    """The ToT prompts of `questions`, phase by phase (a phase's prompts need the last one's
    replies), each prompt answered greedily and sampled twice at T=1."""
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    from vllm_seed.tot.gsm8k import Gsm8kTask
    from vllm_seed.tot.parsing import format_number, last_number

    tokenizer, task, records = llm.get_tokenizer(), Gsm8kTask("train"), []
    params = [SamplingParams(temperature=0.0, max_tokens=MAX_TOKENS, logprobs=TOP_K),
              SamplingParams(temperature=1.0, max_tokens=MAX_TOKENS, logprobs=TOP_K, n=2,
                             seed=SEED)]

    def run(prompts: list[str]) -> list[str]:
        """Greedy and sampled replies; returns the first sampled text of each prompt."""
        ids = [chat_ids(tokenizer, p) for p in prompts]
        batch = [TokensPrompt(prompt_token_ids=i) for i in ids]
        outs = llm.generate(batch * 2, [params[0]] * len(ids) + [params[1]] * len(ids),
                            use_tqdm=False)
        for prompt_ids, out in zip(ids * 2, outs):
            records.extend(record(prompt_ids, c) for c in out.outputs)
        return [o.outputs[0].text for o in outs[len(ids):]]

    first = [question_prompts(q, None, None) for q in questions]
    thoughts = run([p["thought"] for p in first] + [p["direct"] for p in first])
    steps = [task.parse_thought(t) for t in thoughts[: len(questions)]]
    answers = run([question_prompts(q, s, None)["answer"] for q, s in zip(questions, steps)])
    nums = [format_number(last_number(a)) for a in answers]
    third = [question_prompts(q, s, a) for q, s, a in zip(questions, steps, nums)]
    run([p["value"] for p in third] + [p["solution"] for p in third])
    return records


# The draft: the target's tokenizer and vocabulary, 2 layers of width 192. The tied embedding
# (49152 x 192) is most of it; it starts as the target's embedding projected onto its top 192
# right singular vectors (rescaled), so its logit geometry starts close to the target's.
DRAFT_ARCH = dict(num_hidden_layers=2, hidden_size=192, num_attention_heads=3,
                  num_key_value_heads=3, head_dim=64, intermediate_size=1024)
VAL_FRACTION = 0.05


def new_draft(target_dir: Path = TARGET_DIR):
    from transformers import AutoConfig, LlamaConfig, LlamaForCausalLM
    from safetensors.torch import load_file

    tcfg = AutoConfig.from_pretrained(target_dir)
    config = LlamaConfig(
        vocab_size=tcfg.vocab_size, max_position_embeddings=tcfg.max_position_embeddings,
        rope_parameters=dict(tcfg.rope_parameters), rms_norm_eps=tcfg.rms_norm_eps,
        tie_word_embeddings=True, bos_token_id=tcfg.bos_token_id,
        eos_token_id=tcfg.eos_token_id, pad_token_id=tcfg.pad_token_id, dtype="float32",
        **DRAFT_ARCH)
    torch.manual_seed(SEED)
    model = LlamaForCausalLM(config).float()
    embed = load_file(target_dir / "model.safetensors")["model.embed_tokens.weight"].float()
    _, _, v = torch.linalg.svd(embed, full_matrices=False)  # embed = U S V^T
    projected = embed @ v[: config.hidden_size].T
    with torch.no_grad():  # HF's init scale (std 0.02): the target's would make huge logits
        model.model.embed_tokens.weight.copy_(projected * (0.02 / projected.std()))
    return model


class Batch:
    """Right-padded sequences and, for every output position, the target's top-K labels.

    `numel()` counts the positions the loss sees (the trainer logs it as tokens seen).
    """

    def __init__(self, records: list[dict]):
        lengths = [len(r["prompt"]) + len(r["output"]) for r in records]
        self.ids = torch.full((len(records), max(lengths)), 2, dtype=torch.long)
        rows, cols, top_ids, top_lp, hard = [], [], [], [], []
        for i, r in enumerate(records):
            seq = r["prompt"] + r["output"]
            self.ids[i, : len(seq)] = torch.tensor(seq)
            start = len(r["prompt"]) - 1  # logits here predict output[0]
            rows += [i] * len(r["output"])
            cols += range(start, start + len(r["output"]))
            top_ids.append(r["top_ids"].long())
            top_lp.append(r["top_lp"].float())
            hard += r["output"]
        self.rows, self.cols = torch.tensor(rows), torch.tensor(cols)
        self.top_ids, self.top_lp = torch.cat(top_ids), torch.cat(top_lp)
        self.hard = torch.tensor(hard)

    def numel(self) -> int:
        return len(self.hard)


def draft_log_q(model, batch: Batch) -> torch.Tensor:
    """Draft log-probabilities at the output positions only: [N, V]."""
    hidden = model.model(input_ids=batch.ids).last_hidden_state  # [B, S, H]
    return torch.log_softmax(model.lm_head(hidden[batch.rows, batch.cols]), dim=-1)


def distill_loss(model, batch: Batch, hard_weight: float = 0.5) -> torch.Tensor:
    """Cross-entropy to the target's renormalised top-K, plus CE on the target's own token."""
    log_q = draft_log_q(model, batch)
    p = torch.softmax(batch.top_lp, dim=-1)  # -inf entries (fewer than K) get 0
    soft = -(p * log_q.gather(1, batch.top_ids)).sum(-1).mean()
    hard = -log_q.gather(1, batch.hard[:, None]).mean()
    return soft + hard_weight * hard


def val_metrics(model, batches: list[Batch]) -> dict:
    """Top-1 agreement with the target's top token, and the loss, on held-out completions."""
    agree = total = 0
    loss = 0.0
    for b in batches:
        log_q = draft_log_q(model, b)
        agree += (log_q.argmax(-1) == b.top_ids[:, 0]).sum().item()
        total += b.numel()
        loss += distill_loss(model, b).item() * b.numel()
    return {"val_top1_agreement": agree / total, "val_loss": loss / total}


def split_records(records: list[dict], stage_sizes: list[int]) -> tuple[list[dict], list[dict]]:
    """Train and validation completions. Each stage's new records are split on their own, so a
    later stage keeps the earlier stages' validation records out of training."""
    train_recs, val_recs, done = [], [], 0
    for size in stage_sizes + [len(records) - sum(stage_sizes)]:
        block = records[done: done + size]
        done += size
        if not block:
            continue
        order = list(range(len(block)))
        random.Random(SEED).shuffle(order)
        num_val = max(1, int(len(block) * VAL_FRACTION))
        train_recs += [block[i] for i in order[num_val:]]
        val_recs += [block[i] for i in order[:num_val]]
    return train_recs, val_recs


def batches_of(records: list[dict], size: int) -> list[Batch]:
    # Similar lengths together waste less padding.
    ordered = sorted(records, key=lambda r: len(r["prompt"]) + len(r["output"]))
    return [Batch(ordered[i: i + size]) for i in range(0, len(ordered), size)]


def cmd_train(args) -> None:
    from trainer import Schedule, train

    torch.set_flush_denormal(True)
    torch.set_num_threads(args.threads)
    torch.manual_seed(SEED)
    records = [r for r in torch.load(args.data) if r["output"]]
    stages = json.loads(CURVES_PATH.read_text())["stages"] if args.init else []
    train_recs, val_recs = split_records(records, [st["num_completions"] for st in stages])
    train_batches = batches_of(train_recs, args.batch_size)
    val_batches = batches_of(val_recs, args.batch_size)
    order = random.Random(SEED)

    def get_batch(step: int, num_steps: int) -> Batch:
        if step % len(train_batches) == 0:
            order.shuffle(train_batches)
        return train_batches[step % len(train_batches)]

    if args.init:  # a second stage: go on from a saved draft on (more) data
        from transformers import LlamaForCausalLM
        model = LlamaForCausalLM.from_pretrained(args.init, dtype=torch.float32)
    else:
        model = new_draft()
    log(f"draft {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M params; "
        f"{len(train_recs)} train / {len(val_recs)} val completions, "
        f"{sum(b.numel() for b in train_batches)} train tokens")
    curves = train(model, get_batch, distill_loss, lambda m: val_metrics(m, val_batches),
                   Schedule(args.lr, args.warmup), args.minutes, args.steps, log)
    save_draft(model, DRAFT_DIR)
    stages.append({
        "args": {k: str(v) for k, v in vars(args).items() if k != "func"},
        "arch": DRAFT_ARCH, "num_completions": len(records),
        "num_train_tokens": sum(b.numel() for b in train_batches), **curves.__dict__})
    CURVES_PATH.write_text(json.dumps({"stages": stages}, indent=1) + "\n")
    log(f"draft saved to {DRAFT_DIR}; {curves.num_steps} steps, {curves.wall_s} s")


def save_draft(model, out: Path) -> None:
    """float16 safetensors (under the 40 MB budget); vLLM and the drafters load it as float32.

    generation_config.json holds only the special token ids, as the target's does, so vLLM
    takes no sampling defaults from it.
    """
    import shutil

    out.mkdir(parents=True, exist_ok=True)
    model.half().save_pretrained(out, safe_serialization=True)
    model.float()
    gen = {k: getattr(model.config, k) for k in ("bos_token_id", "eos_token_id", "pad_token_id")}
    (out / "generation_config.json").write_text(json.dumps(gen, indent=2) + "\n")
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        shutil.copy(TARGET_DIR / name, out / name)


def cmd_evaluate(args) -> None:
    """Agreement and T=1 acceptance on GSM8K test prompts, and the cost per forward."""
    from transformers import AutoTokenizer, LlamaForCausalLM

    from evaluate_pair import agreement, dir_size, forward_costs, machine

    torch.set_num_threads(args.threads)
    tokenizer = AutoTokenizer.from_pretrained(TARGET_DIR)
    models = {name: LlamaForCausalLM.from_pretrained(d, dtype=torch.float32).eval()
              for name, d in (("target", TARGET_DIR), ("draft", DRAFT_DIR))}
    questions = load_questions("test")[: args.num_questions]
    out = {"machine": machine(), "draft_arch": DRAFT_ARCH,
           "num_params": {k: sum(p.numel() for p in m.parameters()) for k, m in models.items()},
           "draft_files": dir_size(DRAFT_DIR)}
    with torch.inference_mode():
        for kind in ("thought", "direct"):  # the ToT thought prompt, and the bare question
            prompts = [chat_ids(tokenizer, question_prompts(q, None, None)[kind])
                       for q in questions]
            out[f"agreement_{kind}"] = agreement(models["target"], models["draft"], prompts,
                                                 MAX_TOKENS, tokenizer.eos_token_id)
            log(f"{kind}: {out[f'agreement_{kind}']}")
        out["cost_ms"] = forward_costs(models, args.num_warmup, args.num_reps)
    log(f"cost per forward (ms): {out['cost_ms']}")
    METRICS_PATH.write_text(json.dumps(out, indent=1) + "\n")
    log(f"wrote {METRICS_PATH}")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("generate")
    g.add_argument("--num-questions", type=int, default=600)
    g.add_argument("--start", type=int, default=0, help="resume: append the questions from "
                   "this index to the saved completions")
    g.add_argument("--chunk", type=int, default=48, help="questions per saved chunk")
    g.add_argument("--minutes", type=float, default=25.0, help="stop after the chunk that "
                   "passes this budget")
    g.set_defaults(func=cmd_generate)
    t = sub.add_parser("train")
    t.add_argument("--data", type=Path, default=DATA_PATH)
    t.add_argument("--init", type=Path, default=None, help="start from this saved draft "
                   "instead of the SVD-initialised one")
    t.add_argument("--minutes", type=float, default=40.0, help="wall-clock budget")
    t.add_argument("--steps", type=int, default=None, help="replay a recorded run exactly")
    t.add_argument("--batch-size", type=int, default=16, help="completions per step")
    t.add_argument("--lr", type=float, default=2e-3)
    t.add_argument("--warmup", type=int, default=30)
    t.add_argument("--threads", type=int, default=2)
    t.set_defaults(func=cmd_train)
    e = sub.add_parser("evaluate")
    e.add_argument("--num-questions", type=int, default=40, help="GSM8K test questions")
    e.add_argument("--num-warmup", type=int, default=5)
    e.add_argument("--num-reps", type=int, default=30)
    e.add_argument("--threads", type=int, default=2)
    e.set_defaults(func=cmd_evaluate)
    return p.parse_args(argv)


if __name__ == "__main__":
    args = parse_args()
    args.func(args)
