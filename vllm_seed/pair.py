"""Startup checks that the draft can speak for the target.

SEED's drafts are token ids the target verifies as its own, so the draft must
share the target's tokenizer exactly: same vocabulary size, and the same id for
every token and special token. A mismatch is a startup error, never silent
garbage drafts (which would stay lossless but never be accepted).
"""

from __future__ import annotations

import json
import logging
import os

logger = logging.getLogger("vllm.seed")

_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")


def check_vocab_size(draft_dir: str, draft_vocab: int, target_vocab: int) -> None:
    if draft_vocab != target_vocab:
        raise ValueError(
            f"SEED draft model {draft_dir!r} has vocab size {draft_vocab} but the target "
            f"has {target_vocab}; the draft must share the target's tokenizer and vocabulary"
        )


def check_same_tokenizer(target_tokenizer: str, draft_dir: str, trust_remote_code: bool = False) -> None:
    """Raise ValueError naming the first token whose id differs."""
    if not any(os.path.exists(os.path.join(draft_dir, f)) for f in _TOKENIZER_FILES):
        logger.warning(
            "SEED draft model %r ships no tokenizer: cannot check it matches the "
            "target's %r; it is assumed to", draft_dir, target_tokenizer,
        )
        return
    from transformers import AutoTokenizer

    target = AutoTokenizer.from_pretrained(target_tokenizer, trust_remote_code=trust_remote_code)
    draft = AutoTokenizer.from_pretrained(draft_dir, trust_remote_code=trust_remote_code)
    diff = _first_difference(target, draft)
    if diff is not None:
        raise ValueError(
            f"SEED draft model {draft_dir!r} has a different tokenizer from the target "
            f"{target_tokenizer!r}: {diff}. Use a draft trained with the target's tokenizer."
        )


def _first_difference(target, draft) -> str | None:
    t_vocab, d_vocab = target.get_vocab(), draft.get_vocab()
    for token in sorted(t_vocab.keys() | d_vocab.keys()):
        if t_vocab.get(token) != d_vocab.get(token):
            return f"token {token!r} has id {t_vocab.get(token)} in the target, {d_vocab.get(token)} in the draft"
    for name in ("bos_token_id", "eos_token_id"):
        if getattr(target, name) != getattr(draft, name):
            return f"{name} is {getattr(target, name)} in the target, {getattr(draft, name)} in the draft"
    return None


def draft_context_len(model_dir: str) -> int:
    """The draft's context length: its positions beyond that are untrained."""
    with open(os.path.join(model_dir, "config.json")) as f:
        return int(json.load(f).get("max_position_embeddings", 2048))
