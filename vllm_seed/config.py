"""SeedConfig: SEED's own knobs, one frozen dataclass validated when built.

It travels to the engine core inside ``VllmConfig.additional_config["seed"]``
as a plain dict (``to_dict`` / ``from_dict``), so it must stay JSON-simple.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field

from vllm_seed.tree import TokenTree, token_tree

HEAD_DTYPES = ("int8", "float32")  # the drafter's LM head precisions (draft_model.py)
LATE_DRAFTS = ("decode", "hold")  # SeedConfig.late_drafts

ADDITIONAL_CONFIG_KEY = "seed"

# Draft length when neither num_speculative_tokens nor k_config is given.
# Measured (benchmarks/results/bench_tot_defaults_k.md, SmolLM2 pair, T in
# {0, 1}, 1 and 8 ToTs): k=3 was best or within the run's spread of the best
# in every cell; adaptive speculation switches drafting off where it loses.
DEFAULT_NUM_SPECULATIVE_TOKENS = 3


@dataclass(frozen=True)
class SeedConfig:
    draft_model: str
    """Path of the draft model directory (Hugging Face format, same tokenizer
    as the target)."""

    num_speculative_tokens: int
    """Draft length L: draft tokens proposed per branch per round; for a
    token tree, its depth ``len(k_config)``. Left out of
    ``--speculative-config``: the tree's depth, else
    ``DEFAULT_NUM_SPECULATIVE_TOKENS``."""

    num_drafters: int = 1
    """Drafter actors. Each hosts one copy of the draft model and drafts the
    branches assigned to it as one batch, in parallel with the others."""

    max_wait_ms: float = 50.0
    """When every running branch is waiting for its draft, the scheduler
    blocks at most this long for the next draft before it re-checks new
    arrivals (it never spins empty engine steps)."""

    draft_timeout_s: float = 10.0
    """A draft job older than this counts as hung: its branches fall back to
    plain decoding."""

    draft_threads: int = 1
    """torch threads per drafter actor."""

    draft_cpus: tuple[int, ...] = field(default=())
    """CPU cores the drafter actors are pinned to. Empty: on the CPU build, the
    cores vLLM's worker leaves free (it binds its OpenMP threads to all but
    the last core), so drafting runs beside verification instead of
    stealing the target's core; elsewhere, no pinning."""

    draft_head: str = "int8"
    """Precision of the draft's LM head in the drafter: "int8" (weights
    quantised per vocabulary row: a quarter of the bytes to read, the logits
    barely move; see draft_model.Int8Head) or "float32" (the draft exactly as stored).
    Lossless either way: a draft is verified with the q it was drawn from."""

    adaptive: bool = True
    """Stop drafting a branch while its measured gain is below 1 (low
    acceptance, large batch, saturated drafters) and probe again later; see
    adaptive.py. Off: every decoding branch drafts every round."""

    adaptive_length: bool = True
    """Each round, draft each branch the length in 1..num_speculative_tokens
    that its measured acceptance and the measured costs of target steps and
    draft forwards favour (adaptive.py); on whether or not ``adaptive`` is.
    Off: always num_speculative_tokens. Chains only: a tree's shape is fixed."""

    gate: bool = True
    """With ``adaptive``: judge speculation as a whole per range of load, by
    the tokens it emitted against plain decoding's measured speed, and turn it
    off for every branch at that load while it loses (gate.py). Off: only
    each branch's own estimate pauses it."""

    trim: bool = True
    """With ``adaptive``, chains only: before a draft is verified, cut it
    after the last token worth its verification, judged by each token's
    confidence (the largest probability of the draft distribution it was
    drawn from) and the acceptance measured at that confidence, against
    what a verified token costs the target step (adaptive.py). Off: every
    draft is verified whole. Lossless: whether token i is kept depends only
    on the tokens before it and on the distribution it was drawn from."""

    warm_drafts: bool = True
    """In the engine step that prefills a branch's prompt in the target, send
    the prompt to the branch's drafter to prefill it there meanwhile: the
    branch's first draft then costs a round's few tokens, not the prompt, and
    a branch held back for its first draft waits that long only. Off: the
    first draft job prefills the prompt, after the target's prefill."""

    disable_by_batch_size: int | None = None
    """No branch starts a draft while more than this many branches decode
    (vLLM V0's ``speculative_disable_by_batch_size``): where a deployment
    knows the load beyond which speculation does not pay, it need not be
    measured, nor its judging rounds paid (adaptive.py). Drafts in flight
    are still verified. Left out: no limit, adaptive speculation decides."""

    k_config: tuple[int, ...] = field(default=())
    """Token-tree shape (MCSD, see tree.py): node at level d-1 gets k_d
    children, e.g. ``[2, 2, 1]``; verified in one target step. Empty (or all
    ones) means a chain of ``num_speculative_tokens``."""

    replacement: bool = False
    """Sampled tree drafts: draw a node's children with replacement (True) or
    without (False: siblings are distinct tokens). Greedy drafts take the
    top-k distinct tokens either way."""

    late_drafts: str | None = None
    """What a branch does in a target step that runs before its draft has
    landed (the step has other work: plain decodes, prefills, other drafts).
    "decode": if the draft should land during that step (by its drafter's
    recent call time and the target's measured step cost), the branch decodes
    a plain token meanwhile, and the draft is then verified from the token
    after it if it begins with that token (rounds.catch_up), else dropped; a
    draft due later would be left behind, so its branch is held back. "hold":
    the branch is held out of the step until its draft lands. Left out:
    "decode" for chains, "hold" for token trees (the rest of a tree is not a
    tree of the configured shape)."""

    def __post_init__(self) -> None:
        _require_int("num_speculative_tokens", self.num_speculative_tokens, 1, 16)
        _require_int("num_drafters", self.num_drafters, 1, max_drafters())
        _require_int("draft_threads", self.draft_threads, 1, os.cpu_count() or 1)
        if self.disable_by_batch_size is not None:
            _require_int("disable_by_batch_size", self.disable_by_batch_size, 1, 1 << 20)
        _require_positive("max_wait_ms", self.max_wait_ms)
        _require_positive("draft_timeout_s", self.draft_timeout_s)
        if self.draft_head not in HEAD_DTYPES:
            raise ValueError(f"seed config: draft_head={self.draft_head!r} must be one of {list(HEAD_DTYPES)}")
        for name in ("adaptive", "adaptive_length", "gate", "trim", "warm_drafts", "replacement"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"seed config: {name}={getattr(self, name)!r} must be true or false")
        if not isinstance(self.draft_model, str) or not self.draft_model:
            raise ValueError(
                f"seed config: draft_model={self.draft_model!r} must be a path; "
                'pass it as --speculative-config \'{"model": "DRAFT_DIR", ...}\''
            )
        if not os.path.isfile(os.path.join(self.draft_model, "config.json")):
            raise ValueError(
                f"seed config: draft model directory {self.draft_model!r} has no "
                "config.json; point speculative-config 'model' at a Hugging Face "
                "model directory"
            )
        cpus = tuple(self.draft_cpus)
        object.__setattr__(self, "draft_cpus", cpus)
        usable = machine_cores()
        if any(c not in usable for c in cpus):
            raise ValueError(f"seed config: draft_cpus={list(cpus)} must be among this machine's cores {usable}")
        if not isinstance(self.k_config, (list, tuple)):
            raise ValueError(f"seed config: k_config={self.k_config!r} must be a list such as [2, 2, 1]")
        k_config = tuple(self.k_config)
        object.__setattr__(self, "k_config", k_config)
        if k_config:
            try:
                TokenTree(k_config)
            except ValueError as e:
                raise ValueError(f"seed config: {e}") from None
        if self.late_drafts is None:
            object.__setattr__(self, "late_drafts", "hold" if self.tree else "decode")
        if self.late_drafts not in LATE_DRAFTS:
            raise ValueError(f"seed config: late_drafts={self.late_drafts!r} must be one of {list(LATE_DRAFTS)}")
        if self.late_drafts == "decode" and self.tree:
            raise ValueError(
                f"seed config: late_drafts='decode' needs chain drafts, not the token tree "
                f"k_config={list(k_config)}; use 'hold' or leave it out"
            )
        if k_config and len(k_config) != self.num_speculative_tokens:
            raise ValueError(
                f"seed config: k_config={list(k_config)} has depth {len(k_config)} "
                f"but num_speculative_tokens={self.num_speculative_tokens}; "
                "make them equal or leave one out"
            )

    @property
    def tree(self) -> TokenTree | None:
        """The draft's token tree; None for a chain."""
        if not self.k_config or all(k == 1 for k in self.k_config):
            return None
        return token_tree(self.k_config)

    @property
    def num_draft_tokens(self) -> int:
        """Draft tokens verified per round: the tree's nodes, or L for a chain."""
        tree = self.tree
        return self.num_speculative_tokens if tree is None else tree.num_nodes

    def to_dict(self) -> dict:
        return {
            **dataclasses.asdict(self),
            "k_config": list(self.k_config),
            "draft_cpus": list(self.draft_cpus),
        }

    @classmethod
    def from_dict(cls, raw: dict) -> "SeedConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ValueError(
                f"seed config: unknown key(s) {unknown}; valid keys are {sorted(known)}"
            )
        return cls(**raw)


def parse_seed_config_json(text: str | None) -> dict:
    """Parse the ``--seed-config`` JSON object (empty means defaults)."""
    if not text:
        return {}
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"--seed-config is not valid JSON ({e}): {text!r}") from None
    if not isinstance(raw, dict):
        raise ValueError(f"--seed-config must be a JSON object, got {text!r}")
    return raw


def max_drafters() -> int:
    """Drafters beyond the core count only steal time from the target."""
    return max(1, 2 * (os.cpu_count() or 1))


def _require_int(name: str, value, lo: int, hi: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise ValueError(
            f"seed config: {name}={value!r} must be an integer in [{lo}, {hi}]"
        )


def _require_positive(name: str, value) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"seed config: {name}={value!r} must be a positive number")


def machine_cores(cpuset: str = "/sys/fs/cgroup/cpuset.cpus.effective") -> list[int]:
    """The cores this container may use: its cgroup's cpuset ("0-3,6"), else every
    core. Not the process's affinity: vLLM's CPU worker, which validates the config
    again, is bound to the cores it leaves the drafter out of."""
    try:
        with open(cpuset) as f:
            spans = [part.split("-") for part in f.read().strip().split(",") if part]
        return sorted({c for span in spans for c in range(int(span[0]), int(span[-1]) + 1)})
    except (OSError, ValueError):
        return list(range(os.cpu_count() or 1))
