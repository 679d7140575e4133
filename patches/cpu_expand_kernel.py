"""Fix the CPU fallback of the Triton ``expand_kernel`` (temperature > 0).

What: replaces ``vllm.utils.cpu_triton_utils._expand_kernel_impl``.
Why: upstream passes ``_ensure_int64(output)`` to the C++ op; for a float32 or
int32 ``output`` that is a temporary copy that is never copied back, and the
float input is truncated to int64. ``expand_batch_to_tokens`` then returns
uninitialised memory, so the rejection sampler divides the target logits by
garbage per-token temperatures (self-speculation at T=0.8 accepted 5% instead
of 100%). Every speculative method on the CPU build is lossy at T > 0 without
it.
How: a ``torch.repeat_interleave`` implementation that writes into ``output``
in its own dtype. Applied before the worker registers the CPU kernel
overrides; if they were already registered, it re-registers the fixed one.
"""

from __future__ import annotations

TARGET = "vllm.utils.cpu_triton_utils._expand_kernel_impl"
KERNEL_NAME = "vllm.v1.sample.rejection_sampler.expand_kernel"
UPSTREAM_SHA256 = "b0d7df291932f1c3d0818bcba211d3c9b2a701de070dc888ff659948763e9559"


def expand_kernel_impl(
    output,  # [num_tokens]
    input_val,  # [batch_size]
    cu_num_tokens,  # [batch_size], cumulative token counts
    replace_from,
    replace_to,
    MAX_NUM_TOKENS=None,
):
    """output[cu[i-1]:cu[i]] = input[i], with replace_from mapped to replace_to."""
    import torch

    counts = torch.diff(cu_num_tokens.long(), prepend=cu_num_tokens.new_zeros(1).long())
    values = torch.where(
        input_val == replace_from,
        torch.as_tensor(replace_to, dtype=input_val.dtype),
        input_val,
    )
    total = int(cu_num_tokens[-1]) if cu_num_tokens.numel() else 0
    output[:total] = torch.repeat_interleave(values, counts).to(output.dtype)


def apply() -> bool:
    """Patch the CPU build only; return True if the patch was applied."""
    try:
        from vllm.utils import cpu_triton_utils
    except ImportError:  # a GPU build of vLLM: nothing to fix
        return False
    if cpu_triton_utils._expand_kernel_impl is expand_kernel_impl:
        return False
    cpu_triton_utils._seed_original__expand_kernel_impl = (
        cpu_triton_utils._expand_kernel_impl
    )
    cpu_triton_utils._expand_kernel_impl = expand_kernel_impl
    from vllm.triton_utils import dispatcher

    if KERNEL_NAME in dispatcher._registry:
        dispatcher.register_kernels({KERNEL_NAME: expand_kernel_impl})
    return True
