"""Train the embedded tiny pair: tokenizer, GSM8K target, then a draft distilled from it.

    python benchmarks/models/train_pair.py all            # tokenizer + target + draft
    python benchmarks/models/train_pair.py target --minutes 15
    python benchmarks/models/train_pair.py draft --minutes 6 --mix-minutes 3
    python benchmarks/models/train_pair.py target --steps 320   # replay a recorded run

A wall budget becomes a step count after a few timed steps, so on a shared CPU it buys fewer
steps; the shipped pair was trained with explicit --steps (see README.md).

Only GSM8K train is trained on; the val curves use a slice of GSM8K test (no model selection
is done on it). Curves go to train_curves.json, one key per stage.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (CURVES_PATH, DRAFT_DIR, SEED, TARGET_DIR, encode_docs, example_text,  # noqa: E402
                    load_model, load_split, load_tokenizer, new_model, num_params, pack,
                    prompt_text, save_model, setup_torch, train_tokenizer, wrap_tokenizer)
from trainer import Batcher, Schedule, train  # noqa: E402

NUM_VAL_ROWS = 32  # 32 x 256 test tokens per val point: stable to ~0.01 and cheap


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def write_curves(stage: str, record: dict) -> None:
    curves = json.loads(CURVES_PATH.read_text()) if CURVES_PATH.exists() else {}
    curves[stage] = record
    CURVES_PATH.write_text(json.dumps(curves, indent=1) + "\n")


def cmd_tokenizer(args) -> None:
    texts = [example_text(ex) for ex in load_split("train")]
    tokenizer = wrap_tokenizer(train_tokenizer(texts))
    for model_dir in (TARGET_DIR, DRAFT_DIR):  # identical files: the pair shares one vocab
        # The chat template goes inside tokenizer_config.json: one file fewer to ship.
        tokenizer.save_pretrained(model_dir, save_jinja_files=False)
    num_tokens = {split: sum(map(len, encode_docs(tokenizer, [example_text(e) for e in
                                                             load_split(split)])))
                  for split in ("train", "test")}
    write_curves("tokenizer", {"vocab_size": len(tokenizer), "num_tokens": num_tokens})
    log(f"tokenizer: {len(tokenizer)} tokens; GSM8K tokens {num_tokens}")


def load_data(tokenizer) -> tuple[list[list[int]], torch.Tensor]:
    """Train documents and the fixed val rows [NUM_VAL_ROWS, S] from GSM8K test."""
    train_docs = encode_docs(tokenizer, [example_text(e) for e in load_split("train")])
    test_docs = encode_docs(tokenizer, [example_text(e) for e in load_split("test")])
    return train_docs, pack(test_docs, seed=None)[:NUM_VAL_ROWS]


def lm_loss(model, ids: torch.Tensor) -> torch.Tensor:
    return model(input_ids=ids, labels=ids).loss


def cmd_target(args) -> None:
    setup_torch()
    tokenizer = load_tokenizer(TARGET_DIR)
    train_docs, val_rows = load_data(tokenizer)
    model = new_model("target")
    log(f"target: {num_params(model) / 1e6:.2f}M params")
    batcher = Batcher(train_docs, args.batch_size)
    curves = train(model, lambda step, _: batcher.get(step), lm_loss,
                   lambda m: {"val_loss": lm_loss(m, val_rows).item()},
                   Schedule(args.lr, args.warmup), args.minutes, args.steps, log)
    save_model(model, TARGET_DIR)
    write_curves("target", {"args": vars(args) | {"func": None},
                            "num_params": num_params(model), **curves.__dict__})
    log(f"target saved; {curves.num_steps} steps, {curves.tokens_seen} tokens, {curves.wall_s} s")


def kl_loss(draft, target, ids: torch.Tensor) -> torch.Tensor:
    """KL(target || draft) at T=1 per token: soft labels carry the target's whole p."""
    with torch.no_grad():
        log_p = F.log_softmax(target(input_ids=ids).logits.float(), dim=-1)  # [B, S, V]
    log_q = F.log_softmax(draft(input_ids=ids).logits, dim=-1)  # [B, S, V]
    return F.kl_div(log_q.flatten(0, 1), log_p.flatten(0, 1), log_target=True,
                    reduction="batchmean")


def sample_target(target, tokenizer, num_samples: int, batch_size: int,
                  max_new_tokens: int) -> list[list[int]]:
    """The target's own T=1 answers to train questions, as whole documents ending in EOS.

    These put the draft on the text it will actually be asked to predict at serving time.
    """
    questions = [e["question"] for e in load_split("train")]
    gen = torch.Generator().manual_seed(SEED)
    picks = torch.randperm(len(questions), generator=gen)[:num_samples].tolist()
    tokenizer.padding_side = "left"
    torch.manual_seed(SEED)
    docs: list[list[int]] = []
    for i in range(0, len(picks), batch_size):
        prompts = [prompt_text(questions[j]) for j in picks[i: i + batch_size]]
        enc = tokenizer(prompts, return_tensors="pt", padding=True)
        with torch.inference_mode():
            out = target.generate(**enc, do_sample=True, temperature=1.0, top_k=0, top_p=1.0,
                                  max_new_tokens=max_new_tokens, pad_token_id=tokenizer.eos_token_id)
        docs += [strip_padding(row, enc["attention_mask"].shape[1], mask, tokenizer.eos_token_id)
                 for row, mask in zip(out.tolist(), enc["attention_mask"].tolist())]
        log(f"sampled {len(docs)}/{len(picks)} target answers")
    return docs


def strip_padding(row: list[int], prompt_len: int, mask: list[int], eos_id: int) -> list[int]:
    """Drop left padding and everything after the first generated EOS (kept)."""
    prompt = [t for t, m in zip(row[:prompt_len], mask) if m]
    answer = row[prompt_len:]
    if eos_id in answer:
        answer = answer[: answer.index(eos_id) + 1]
    return prompt + answer


def mixed_batches(train_docs, sample_docs, batch_size: int, mix_frac: float):
    """Train text only until `mix_frac` of the steps, then half train text, half samples."""
    text = Batcher(train_docs, batch_size)
    half_text, half_samples = Batcher(train_docs, batch_size // 2), Batcher(sample_docs,
                                                                          batch_size // 2)

    def get(step: int, num_steps: int) -> torch.Tensor:
        mix_start = int(num_steps * mix_frac)
        if step < mix_start:
            return text.get(step)
        # Phase one used 2 * mix_start half-batches of train text; carry on from there.
        return torch.cat([half_text.get(mix_start + step), half_samples.get(step - mix_start)])

    return get


def cmd_draft(args) -> None:
    setup_torch()
    tokenizer = load_tokenizer(TARGET_DIR)
    train_docs, val_rows = load_data(tokenizer)
    target = load_model(TARGET_DIR).requires_grad_(False)
    t = time.perf_counter()
    sample_docs = sample_target(target, tokenizer, args.num_samples, 128, args.max_new_tokens)
    sampling_s = round(time.perf_counter() - t, 1)
    draft = new_model("draft")
    log(f"draft: {num_params(draft) / 1e6:.2f}M params; sampling took {sampling_s} s")
    minutes = args.minutes + args.mix_minutes
    mix_frac = args.mix_frac if args.mix_frac is not None else args.minutes / minutes
    curves = train(draft, mixed_batches(train_docs, sample_docs, args.batch_size, mix_frac),
                   lambda m, ids: kl_loss(m, target, ids),
                   lambda m: {"val_kl": kl_loss(m, target, val_rows).item(),
                              "val_loss": lm_loss(m, val_rows).item()},
                   Schedule(args.lr, args.warmup), minutes, args.steps, log)
    save_model(draft, DRAFT_DIR)
    for name in ("tokenizer.json", "tokenizer_config.json"):  # keep the pair's vocab identical
        shutil.copy(TARGET_DIR / name, DRAFT_DIR / name)
    write_curves("draft", {"args": vars(args) | {"func": None, "mix_frac": mix_frac},
                           "num_params": num_params(draft), "sampling_s": sampling_s,
                           "num_sample_tokens": sum(map(len, sample_docs)), **curves.__dict__})
    log(f"draft saved; {curves.num_steps} steps, {curves.tokens_seen} tokens, {curves.wall_s} s")


def cmd_all(args) -> None:
    cmd_tokenizer(args)
    cmd_target(parse_args(["target"]))
    cmd_draft(parse_args(["draft"]))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="stage", required=True)
    sub.add_parser("tokenizer").set_defaults(func=cmd_tokenizer)
    sub.add_parser("all").set_defaults(func=cmd_all)
    for stage, minutes, func in (("target", 15.0, cmd_target), ("draft", 6.0, cmd_draft)):
        p = sub.add_parser(stage)
        p.set_defaults(func=func)
        p.add_argument("--minutes", type=float, default=minutes, help="wall budget")
        p.add_argument("--steps", type=int, default=None, help="exact step count (replay)")
        # 16 rows beat 32 at equal tokens here: twice the updates in a ~1M-token budget.
        p.add_argument("--batch-size", type=int, default=16)
        p.add_argument("--lr", type=float, default=3e-3)
        p.add_argument("--warmup", type=int, default=10)
    draft = sub.choices["draft"]
    draft.add_argument("--mix-minutes", type=float, default=3.0,
                       help="extra minutes on half train text, half target samples")
    draft.add_argument("--mix-frac", type=float, default=None,
                       help="step fraction where mixing starts (replay; default from minutes)")
    draft.add_argument("--num-samples", type=int, default=256)
    draft.add_argument("--max-new-tokens", type=int, default=192)
    return parser.parse_args(argv)


if __name__ == "__main__":
    args = parse_args()
    args.func(args)
