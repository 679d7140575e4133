"""Skip the engine core's per-step draft-token poll when the scheduler drafts.

What: wraps ``vllm.v1.engine.core.EngineCore.post_step``.
Why: with speculative decoding on and async scheduling off, every engine step
ends with a ``take_draft_token_ids`` RPC to the worker, to fetch the drafts
the worker's proposer made. SEED's drafts come from the scheduler (drafter
actors); its proposer proposes nothing, so the RPC carries back empty lists
(vLLM's scheduler already clears ``spec_token_ids`` once it schedules them,
scheduler.py:876). The round trip is one of three worker RPCs per SEED step.
How: ``post_step`` returns at once when the engine's scheduler has a true
``supplies_draft_tokens`` attribute (``SeedScheduler`` does); every other
scheduler gets the original method.
"""

from __future__ import annotations

from ._on_import import patch_on_import

MODULE = "vllm.v1.engine.core"
TARGET = "vllm.v1.engine.core.EngineCore.post_step"
UPSTREAM_SHA256 = "dfda901ee36bf711011bb5dd2d029d2658983a3c15a64c475b2050a395620d7a"


def make_post_step(original):
    def post_step(self, model_executed: bool) -> None:
        if getattr(self.scheduler, "supplies_draft_tokens", False):
            return  # the scheduler's drafts are already in its requests
        original(self, model_executed)

    return post_step


def patch_engine_core(module) -> bool:
    """Wrap ``module.EngineCore.post_step``; True if newly done."""
    engine_core = module.EngineCore
    if getattr(engine_core, "_seed_original_post_step", None) is not None:
        return False
    engine_core._seed_original_post_step = engine_core.post_step
    engine_core.post_step = make_post_step(engine_core.post_step)
    return True


def apply() -> bool:
    """Patch the engine core now, or when it is first imported."""
    return patch_on_import(MODULE, patch_engine_core)
