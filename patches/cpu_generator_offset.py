"""Rewind a seeded request's CPU generator after a discarded sample (chunked prefill).

What: wraps ``_sample`` and ``_bookkeeping_sync`` of
``vllm.v1.worker.cpu_model_runner.CPUModelRunner`` (both inherited from
``GPUModelRunner``); the GPU runner is left alone.
Why: a step that ends inside a request's prompt (a partial prefill) still
samples a token for it, then discards it. So that the discarded sample does not
advance the request's RNG stream, ``_bookkeeping_sync`` rewinds the Philox
offset of its generator: ``gen.set_offset(gen.get_offset() - 4)``. A CPU
generator (Mersenne Twister) has no offset, so any request with
``SamplingParams(seed=...)`` whose prefill is chunked kills the engine with
``RuntimeError: CPU Generator does not use offset``.
How: ``_sample`` saves the state of the generators of the requests whose sample
is discarded (``discard_request_mask``, known before sampling) and restores it
after sampling: their generators end as if the discarded sample never
happened, whatever the sampler drew. ``_bookkeeping_sync`` then runs with those
generators out of ``input_batch.generators``, so upstream's offset rewind skips
them. Applied when ``cpu_model_runner`` is imported (in the worker), so other
processes do not pay for importing the model runner.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._on_import import patch_on_import

if TYPE_CHECKING:
    import torch

MODULE = "vllm.v1.worker.cpu_model_runner"
# The upstream methods wrapped (CPUModelRunner inherits both), each with the
# sha256 of its source when the patch was written.
UPSTREAM_SHA256 = {
    "vllm.v1.worker.gpu_model_runner.GPUModelRunner._sample":
        "5cb5c1da02cfdc689acb7bab51ca7eb56e2ef3b19bea4b92fc6ca4370be2cf5a",
    "vllm.v1.worker.gpu_model_runner.GPUModelRunner._bookkeeping_sync":
        "13c3e81003a7e168f5cd7a0a04bbc70b16d6c54c18ae4edbf41a45f73c3b6ea1",
}
TARGET = tuple(UPSTREAM_SHA256)


def discarded_generators(runner) -> dict[int, torch.Generator]:
    """{batch index: generator} of the seeded requests whose sample is discarded."""
    import numpy as np

    generators = runner.input_batch.generators
    mask = runner.discard_request_mask.np[: runner.input_batch.num_reqs]  # [num_reqs]
    return {int(i): generators[int(i)] for i in np.nonzero(mask)[0] if int(i) in generators}


def make_sample(original):
    def _sample(self, logits, spec_decode_metadata):
        saved = [(gen, gen.get_state()) for gen in discarded_generators(self).values()]
        output = original(self, logits, spec_decode_metadata)
        for gen, state in saved:
            gen.set_state(state)
        return output

    return _sample


def make_bookkeeping_sync(original):
    def _bookkeeping_sync(self, *args, **kwargs):
        # Rewound in _sample already; upstream's offset rewind must not see them.
        generators = self.input_batch.generators
        hidden = {i: generators.pop(i) for i in discarded_generators(self)}
        try:
            return original(self, *args, **kwargs)
        finally:
            generators.update(hidden)

    return _bookkeeping_sync


def patch_runner(module) -> bool:
    """Wrap the two methods of ``module.CPUModelRunner``; True if newly done."""
    runner = module.CPUModelRunner
    if getattr(runner, "_seed_generator_offset_patched", False):
        return False
    runner._sample = make_sample(runner._sample)
    runner._bookkeeping_sync = make_bookkeeping_sync(runner._bookkeeping_sync)
    runner._seed_generator_offset_patched = True
    return True


def apply() -> bool:
    """Patch the CPU model runner now, or when it is first imported (the worker)."""
    return patch_on_import(MODULE, patch_runner)
