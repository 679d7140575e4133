"""A wall-clock-budgeted training loop shared by the target and the draft.

A budget in minutes is turned into a fixed number of optimizer steps after a few timed steps
(calibration); from then on the run is defined by `num_steps` alone, which is recorded in the
curves file, so `--steps N` replays the same run exactly (same seed, same data order).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable

import torch

from common import SEED, pack

NUM_CALIB_STEPS = 6  # timed after one untimed step; enough to average out CPU noise
NUM_EVALS = 12  # val-loss points per run, evenly spaced


@dataclass(frozen=True)
class Schedule:
    """Linear warmup, then cosine decay from `peak_lr` to `peak_lr * final_frac`."""

    peak_lr: float
    num_warmup: int
    final_frac: float = 0.1

    def lr(self, step: int, num_steps: int) -> float:
        if step < self.num_warmup:
            return self.peak_lr * (step + 1) / self.num_warmup
        progress = min(1.0, (step - self.num_warmup) / max(1, num_steps - self.num_warmup))
        cosine = 0.5 * (1 + math.cos(math.pi * progress))
        return self.peak_lr * (self.final_frac + (1 - self.final_frac) * cosine)


class Batcher:
    """Rows of packed documents; every epoch re-shuffles the documents with a new seed."""

    def __init__(self, docs: list[list[int]], batch_size: int, seed: int = SEED):
        self.docs, self.batch_size, self.seed = docs, batch_size, seed
        self.epoch, self.rows = 0, pack(docs, seed=seed)  # [N, S]
        if len(self.rows) < batch_size:
            raise ValueError(f"only {len(self.rows)} rows of data for batch_size={batch_size}")

    def get(self, step: int) -> torch.Tensor:
        """Batch `step` of the endless stream of rows. Returns [batch_size, S]."""
        start = step * self.batch_size
        epoch, offset = divmod(start, (len(self.rows) // self.batch_size) * self.batch_size)
        if epoch != self.epoch:
            self.epoch, self.rows = epoch, pack(self.docs, seed=self.seed + epoch)
        return self.rows[offset: offset + self.batch_size]


@dataclass
class Curves:
    """What the loop records; written to train_curves.json under the model's name."""

    num_steps: int = 0
    tokens_seen: int = 0
    wall_s: float = 0.0
    train: list = field(default_factory=list)  # [step, elapsed_s, lr, loss]
    val: list = field(default_factory=list)  # [step, elapsed_s, {metric: value}]


def calibrate(budget_s: float, elapsed_s: float, step_s: float, eval_s: float, done: int) -> int:
    """Number of steps that fills the budget, counting the remaining val evaluations."""
    left = budget_s - elapsed_s - NUM_EVALS * eval_s
    return max(done + 1, done + int(left / step_s))


def train(model, get_batch: Callable[[int, int], torch.Tensor],
          loss_fn: Callable[[object, torch.Tensor], torch.Tensor],
          evaluate: Callable[[object], dict], schedule: Schedule,
          minutes: float | None, steps: int | None, log: Callable[[str], None]) -> Curves:
    """Run AdamW until the step count (given, or calibrated from `minutes`) is reached.

    get_batch(step, num_steps) -> [B, S] ids; loss_fn(model, ids) -> scalar loss;
    evaluate(model) -> {metric: float}, called NUM_EVALS + 1 times.
    """
    opt = make_optimizer(model, schedule.peak_lr)
    curves, t0 = Curves(), time.perf_counter()
    eval_s = record_eval(model, evaluate, curves, 0, t0, log)
    num_steps = steps if steps is not None else 10**9  # replaced once calibrated
    step_times: list[float] = []
    step = 0
    while step < num_steps:
        ids = get_batch(step, num_steps)
        lr = schedule.lr(step, num_steps)
        t = time.perf_counter()
        loss = train_step(model, opt, loss_fn, ids, lr)
        step_times.append(time.perf_counter() - t)
        step += 1
        curves.tokens_seen += ids.numel()
        curves.train.append([step, round(time.perf_counter() - t0, 2), lr, round(loss, 4)])
        if steps is None and step == NUM_CALIB_STEPS + 1:
            step_s = sum(step_times[1:]) / NUM_CALIB_STEPS
            num_steps = calibrate(minutes * 60, time.perf_counter() - t0, step_s, eval_s, step)
            log(f"calibrated: {step_s:.2f} s/step, eval {eval_s:.1f} s -> {num_steps} steps")
        if step % 10 == 0:
            log(f"step {step}/{num_steps} lr {lr:.2e} loss {loss:.4f}")
        if step == num_steps or step % max(1, num_steps // NUM_EVALS) == 0:
            record_eval(model, evaluate, curves, step, t0, log)
    curves.num_steps, curves.wall_s = num_steps, round(time.perf_counter() - t0, 1)
    return curves


def make_optimizer(model, lr: float) -> torch.optim.AdamW:
    # No weight decay on norms: decaying RMSNorm gains towards 0 only hurts.
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.95), eps=1e-8)


def train_step(model, opt, loss_fn, ids: torch.Tensor, lr: float) -> float:
    model.train()
    for group in opt.param_groups:
        group["lr"] = lr
    loss = loss_fn(model, ids)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    return loss.item()


def record_eval(model, evaluate, curves: Curves, step: int, t0: float, log) -> float:
    """Appends one val point; returns how long the evaluation took (for calibration)."""
    if curves.val and curves.val[-1][0] == step:
        return 0.0
    t = time.perf_counter()
    model.eval()
    with torch.inference_mode():
        metrics = {k: round(v, 4) for k, v in evaluate(model).items()}
    curves.val.append([step, round(time.perf_counter() - t0, 2), metrics])
    log(f"val @ step {step}: {metrics}")
    return time.perf_counter() - t
