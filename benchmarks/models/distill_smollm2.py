"""Distil a small draft for the SmolLM2-135M-Instruct target (`build_smollm2.py` builds it).

    python benchmarks/models/distill_smollm2.py generate --num-questions 480
    python benchmarks/models/distill_smollm2.py train --layers 4 --steps 1731 --lr 1e-3 \
        --out /tmp/draft4
    python benchmarks/models/distill_smollm2.py train --init /tmp/draft4 --layers 3 \
        --steps 682 --lr 5e-4 --warmup 20
    python benchmarks/models/distill_smollm2.py evaluate

(the committed draft's recipe; benchmarks/models/README.md has its times, curves and results).

`generate` serves the target with plain vLLM (float32) and records its own completions of the
prompts the ToT workload sends (GSM8K train questions in the chat template: thought, answer,
evaluation and solution prompts, and the bare question), greedy and at T=1, each token with the
target's top-20 log-probabilities. `train` fits the draft, the target's first layers, to
those soft labels (cross-entropy to the top-20 renormalised over the draft's tokens, plus
cross-entropy on the target's token). `evaluate` measures, on held-out
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
from build_smollm2 import EMBED_FILE, EMBED_KEY, sha256, write_embedding  # noqa: E402

from vllm_seed.draft_model import DRAFT_VOCAB_FILE, draft_vocab  # noqa: E402
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


# The draft: the target's first DRAFT_LAYERS layers, its final norm and its embedding, tied to
# the LM head as in the target. Only the layers and the norm train; the embedding stays the
# target's, so it is not committed: `build_smollm2.py` writes it next to the trained weights
# (`EMBED_FILE`). The head proposes from the DRAFT_VOCAB_SIZE tokens most frequent in the
# target's training completions (`draft_vocab.json`, vllm_seed/draft_model.py): most of a
# 4-layer draft's forward would otherwise be its 49152-row head.
DRAFT_LAYERS = 3
DRAFT_VOCAB_SIZE = 8192
VAL_FRACTION = 0.05
TRAINED_FILE = "trained.safetensors"


def new_draft(num_layers: int, init: Path = TARGET_DIR):
    """The model at `init` (the target, or a draft) cut after its first `num_layers` layers,
    embedding frozen."""
    from transformers import LlamaForCausalLM

    model = LlamaForCausalLM.from_pretrained(init, dtype=torch.float32)
    if num_layers > model.config.num_hidden_layers:
        raise SystemExit(f"--layers {num_layers}: {init} has {model.config.num_hidden_layers}")
    model.model.layers = model.model.layers[:num_layers]
    model.config.num_hidden_layers = num_layers
    model.model.embed_tokens.weight.requires_grad_(False)
    return model


def frequent_tokens(records: list[dict], size: int = DRAFT_VOCAB_SIZE) -> list[int]:
    """The `size` token ids most frequent in the completions (ties: the lower id)."""
    counts = torch.bincount(torch.tensor([t for r in records for t in r["output"]]))
    order = sorted(range(len(counts)), key=lambda t: (-int(counts[t]), t))
    return sorted(order[:size])


class DraftVocab:
    """The draft's head rows: token ids, and each vocabulary id's row (-1: none)."""

    def __init__(self, token_ids: list[int], vocab_size: int):
        self.ids = torch.tensor(sorted(token_ids))
        self.row = torch.full((vocab_size,), -1, dtype=torch.long)
        self.row[self.ids] = torch.arange(len(self.ids))


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


def draft_log_q(model, batch: Batch, vocab: DraftVocab) -> torch.Tensor:
    """Draft log-probabilities over its head's tokens at the output positions: [N, V']."""
    hidden = model.model(input_ids=batch.ids).last_hidden_state  # [B, S, H], normed
    head = model.model.embed_tokens.weight[vocab.ids]  # [V', H]: the head is tied to it
    return torch.log_softmax(hidden[batch.rows, batch.cols] @ head.T, dim=-1)


def distill_loss(model, batch: Batch, vocab: DraftVocab, hard_weight: float = 0.5) -> torch.Tensor:
    """Cross-entropy to the target's top-K renormalised over the draft's tokens, plus CE on
    the target's own token where the draft can propose it."""
    log_q = draft_log_q(model, batch, vocab)
    rows = vocab.row[batch.top_ids]  # [N, K], -1 outside the draft's tokens
    lp = batch.top_lp.masked_fill(rows < 0, -math.inf)
    p = torch.softmax(lp, dim=-1).nan_to_num(0.0)  # a position with none of them: no soft label
    soft = -(p * log_q.gather(1, rows.clamp_min(0))).sum(-1).mean()
    hard_rows = vocab.row[batch.hard]
    known = hard_rows >= 0
    hard = -log_q[known].gather(1, hard_rows[known, None]).mean()
    return soft + hard_weight * hard


def val_metrics(model, batches: list[Batch], vocab: DraftVocab) -> dict:
    """Top-1 agreement with the target's top token, and the loss, on held-out completions."""
    agree = total = 0
    loss = 0.0
    for b in batches:
        log_q = draft_log_q(model, b, vocab)
        agree += (vocab.ids[log_q.argmax(-1)] == b.top_ids[:, 0]).sum().item()
        total += b.numel()
        loss += distill_loss(model, b, vocab).item() * b.numel()
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

    if args.init:  # a later stage: go on from a saved draft, possibly cut to fewer layers
        model = new_draft(args.layers, args.init)
        token_ids = draft_vocab(str(args.init), model.config.vocab_size).tolist()
    else:
        model, token_ids = new_draft(args.layers), frequent_tokens(train_recs)
    vocab = DraftVocab(token_ids, model.config.vocab_size)
    outputs = torch.tensor([t for r in val_recs for t in r["output"]])
    log(f"draft {sum(p.numel() for p in model.parameters() if p.requires_grad) / 1e6:.2f}M "
        f"trained params; {len(train_recs)} train / {len(val_recs)} val completions, "
        f"{sum(b.numel() for b in train_batches)} train tokens; its {len(vocab.ids)} tokens "
        f"cover {(vocab.row[outputs] >= 0).float().mean():.4f} of the val completions' tokens")
    curves = train(model, get_batch, lambda m, b: distill_loss(m, b, vocab),
                   lambda m: val_metrics(m, val_batches, vocab),
                   Schedule(args.lr, args.warmup), args.minutes, args.steps, log)
    save_draft(model, vocab, args.out)
    stages.append({
        "args": {k: str(v) for k, v in vars(args).items() if k != "func"},
        "arch": draft_arch(args.layers), "num_completions": len(records),
        "num_train_tokens": sum(b.numel() for b in train_batches), **curves.__dict__})
    CURVES_PATH.write_text(json.dumps({"stages": stages}, indent=1) + "\n")
    log(f"draft saved to {args.out}; {curves.num_steps} steps, {curves.wall_s} s")


def draft_arch(num_layers: int = DRAFT_LAYERS) -> dict:
    return {"layers": f"the target's first {num_layers}", "draft_vocab_size": DRAFT_VOCAB_SIZE}


def save_draft(model, vocab: DraftVocab, out: Path) -> None:
    """The trained weights in float16 (`TRAINED_FILE`, under the 40 MB budget) and the
    target's embedding (`EMBED_FILE`, gitignored: `build_smollm2.py` writes it too), with an
    index that names both, so vLLM and transformers load the directory as one Llama (as
    float32). generation_config.json holds only the special token ids, as the target's does,
    so vLLM takes no sampling defaults from it.
    """
    import shutil

    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    weights = {k: v.detach() for k, v in model.state_dict().items() if k != "lm_head.weight"}
    trained = {k: v.half().contiguous() for k, v in weights.items() if k != EMBED_KEY}
    save_file(trained, out / TRAINED_FILE, metadata={"format": "pt"})
    write_embedding(weights[EMBED_KEY], out / EMBED_FILE)
    weight_map = {**{k: TRAINED_FILE for k in sorted(trained)}, EMBED_KEY: EMBED_FILE}
    index = {"metadata": {"embedding_sha256": sha256(out / EMBED_FILE)}, "weight_map": weight_map}
    (out / "model.safetensors.index.json").write_text(json.dumps(index, indent=1) + "\n")
    (out / "model.safetensors").unlink(missing_ok=True)  # the previous recipe's single file
    model.config.dtype = "float16"
    model.config.save_pretrained(out)
    (out / DRAFT_VOCAB_FILE).write_text(json.dumps({"token_ids": vocab.ids.tolist()}) + "\n")
    gen = {k: getattr(model.config, k) for k in ("bos_token_id", "eos_token_id", "pad_token_id")}
    (out / "generation_config.json").write_text(json.dumps(gen, indent=2) + "\n")
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        shutil.copy(TARGET_DIR / name, out / name)


class VocabMasked(torch.nn.Module):
    """A draft's logits as its drafter proposes from them: -inf outside draft_vocab.json's
    tokens (vllm_seed/draft_model.py computes only those rows; the same numbers)."""

    def __init__(self, model, token_ids: list[int]):
        super().__init__()
        self.model = model
        self.outside = torch.ones(model.config.vocab_size, dtype=torch.bool)
        self.outside[token_ids] = False

    def forward(self, input_ids):
        out = self.model(input_ids=input_ids)
        out.logits = out.logits.masked_fill(self.outside, -math.inf)
        return out


def drafter_costs(num_warmup: int, num_reps: int) -> dict:
    """Milliseconds per forward as SEED's drafter runs each model (vllm_seed.draft_model:
    fused layers, slot KV cache), the draft with its head over draft_vocab.json's tokens in
    float32 and in int8 (the plugin's default), the target with its full float32 head."""
    from evaluate_pair import CACHE_LEN, PREFILL_LEN, time_pair

    from vllm_seed.draft_model import DraftLM

    gen = torch.Generator().manual_seed(0)
    lms = {"target": DraftLM(str(TARGET_DIR), 512, slots=8),
           "float32": DraftLM(str(DRAFT_DIR), 512, slots=8),
           "int8": DraftLM(str(DRAFT_DIR), 512, slots=8, head="int8")}
    vocab_size = lms["target"].vocab_size
    ids = torch.randint(2, vocab_size, (8, CACHE_LEN + 1), generator=gen).tolist()
    for lm in lms.values():
        lm.forward(list(range(8)), [0] * 8, [row[:CACHE_LEN] for row in ids])

    def shapes(lm):
        return {"decode_b1_ctx200": lambda: lm.forward([0], [CACHE_LEN], [ids[0][CACHE_LEN:]]),
                "decode_b8_ctx200": lambda: lm.forward(list(range(8)), [CACHE_LEN] * 8,
                                                       [row[CACHE_LEN:] for row in ids]),
                "prefill_b1_128": lambda: lm.forward([0], [0], [ids[0][:PREFILL_LEN]])}

    fns = {name: shapes(lm) for name, lm in lms.items()}
    return {head: {shape: time_pair({"target": fns["target"][shape], "draft": fns[head][shape]},
                                    num_warmup, num_reps) for shape in fns["target"]}
            for head in ("int8", "float32")}


def cmd_evaluate(args) -> None:
    """Agreement and T=1 acceptance on GSM8K test prompts, and the cost per forward."""
    from transformers import AutoTokenizer, LlamaForCausalLM

    from evaluate_pair import agreement, dir_size, forward_costs, machine

    torch.set_num_threads(args.threads)
    tokenizer = AutoTokenizer.from_pretrained(TARGET_DIR)
    models = {name: LlamaForCausalLM.from_pretrained(d, dtype=torch.float32).eval()
              for name, d in (("target", TARGET_DIR), ("draft", DRAFT_DIR))}
    token_ids = draft_vocab(str(DRAFT_DIR), models["draft"].config.vocab_size).tolist()
    questions = load_questions("test")[: args.num_questions]
    out = {"machine": machine(),
           "draft_arch": draft_arch(models["draft"].config.num_hidden_layers),
           "num_params": {k: sum(p.numel() for p in m.parameters()) for k, m in models.items()},
           "num_trained_params": sum(p.numel() for n, p in models["draft"].named_parameters()
                                     if n != EMBED_KEY),
           "draft_files": dir_size(DRAFT_DIR)}
    with torch.inference_mode():
        for kind in ("thought", "direct"):  # the ToT thought prompt, and the bare question
            prompts = [chat_ids(tokenizer, question_prompts(q, None, None)[kind])
                       for q in questions]
            out[f"agreement_{kind}"] = agreement(models["target"],
                                                 VocabMasked(models["draft"], token_ids),
                                                 prompts, MAX_TOKENS, tokenizer.eos_token_id)
            log(f"{kind}: {out[f'agreement_{kind}']}")
        # Both models in transformers, the draft with its full head: as stock vLLM's
        # draft-model speculative decoding runs it.
        out["cost_ms_full_head"] = forward_costs(models, args.num_warmup, args.num_reps)
        out["cost_ms_drafter"] = drafter_costs(args.num_warmup, args.num_reps)
    log(f"cost per forward (ms): {out['cost_ms_full_head']}, {out['cost_ms_drafter']}")
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
    t.add_argument("--out", type=Path, default=DRAFT_DIR, help="where to save the draft")
    t.add_argument("--layers", type=int, default=DRAFT_LAYERS, help="the draft's first layers "
                   "(the target's, or --init's) to keep")
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
