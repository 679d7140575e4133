"""Registry of the monkey-patches vllm-seed applies to vLLM 0.32.

Each patch is one small module with ``TARGET`` (the upstream symbol),
``UPSTREAM_SHA256`` (hash of that symbol's source when the patch was written,
so a test fails the day upstream changes it; a ``{symbol: hash}`` dict when a
patch wraps several symbols) and ``apply()``. README.md in
this folder says what, why, how, the upstream issue and when to remove each.
"""

from __future__ import annotations

import hashlib
import inspect
import os
import pkgutil

from . import cpu_expand_kernel, cpu_generator_offset, engine_core_draft_poll

# Patches applied in every process by vllm_seed.register(). The install-time
# patch (vllm_dist_alias) is not here: it must act before any plugin loads.
RUNTIME_PATCHES = (cpu_expand_kernel, cpu_generator_offset, engine_core_draft_poll)

# Comma-separated short names to skip, e.g. "cpu_expand_kernel": for the
# tests that prove a patch is needed, never for users.
DISABLE_ENV = "SEED_DISABLE_PATCHES"

_applied: set[str] = set()


def apply_all() -> list[str]:
    """Apply each runtime patch once per process; return the names applied now."""
    disabled = set(filter(None, os.environ.get(DISABLE_ENV, "").split(",")))
    newly = []
    for patch in RUNTIME_PATCHES:
        if patch.__name__ in _applied or patch.__name__.rsplit(".", 1)[-1] in disabled:
            continue
        if patch.apply():
            newly.append(patch.__name__)
        _applied.add(patch.__name__)
    return newly


def upstream_hashes(patch) -> dict[str, str]:
    """{upstream symbol: sha256 of its source when the patch was written}."""
    if isinstance(patch.UPSTREAM_SHA256, dict):
        return dict(patch.UPSTREAM_SHA256)
    return {patch.TARGET: patch.UPSTREAM_SHA256}


def upstream_source_sha256(dotted: str) -> str:
    """sha256 of the source of ``module.attr`` (or ``module.Class.attr``) as vLLM ships it."""
    owner_name, attr = dotted.rsplit(".", 1)
    owner = pkgutil.resolve_name(owner_name)
    original = getattr(owner, f"_seed_original_{attr}", None) or getattr(owner, attr)
    return hashlib.sha256(inspect.getsource(original).encode()).hexdigest()
