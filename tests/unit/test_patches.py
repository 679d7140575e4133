"""Each patch: it fixes what it says, and fails loudly if upstream changes."""

import importlib.metadata
import subprocess
import sys

import pytest
import torch

import vllm_seed_patches
from vllm_seed_patches import cpu_expand_kernel, vllm_dist_alias

ALL_PATCHES = (cpu_expand_kernel, vllm_dist_alias)


@pytest.mark.parametrize("patch", ALL_PATCHES, ids=lambda p: p.__name__)
def test_upstream_symbol_is_the_one_the_patch_was_written_for(patch):
    # If this fails, vLLM changed the patched code: re-check the bug, then
    # update UPSTREAM_SHA256 or delete the patch (see patches/README.md).
    assert vllm_seed_patches.upstream_source_sha256(patch.TARGET) == patch.UPSTREAM_SHA256


def expand_inputs(dtype):
    values = torch.tensor([0.8, -1.0, 0.5], dtype=torch.float32).to(dtype)
    cu = torch.tensor([2, 3, 6], dtype=torch.int32)
    return torch.zeros(6, dtype=dtype), values, cu


@pytest.mark.parametrize("dtype", [torch.float32, torch.int32, torch.int64])
def test_fixed_expand_writes_into_output(dtype):
    out, values, cu = expand_inputs(dtype)
    cpu_expand_kernel.expand_kernel_impl(out, values, cu, -1, 1)
    expected = torch.tensor([0.8, 0.8, 1.0, 0.5, 0.5, 0.5]).to(dtype)
    assert torch.equal(out, expected)


def test_upstream_expand_is_broken_for_float_outputs():
    from vllm.platforms import current_platform
    from vllm.utils import cpu_triton_utils

    current_platform.import_kernels()  # loads torch.ops._C (the C++ fallbacks)

    original = getattr(cpu_triton_utils, "_seed_original__expand_kernel_impl", None)
    original = original or cpu_triton_utils._expand_kernel_impl
    out, values, cu = expand_inputs(torch.float32)
    original(out, values, cu, -1, 1)
    assert not torch.equal(out, torch.tensor([0.8, 0.8, 1.0, 0.5, 0.5, 0.5]))


def test_apply_all_patches_cpu_build_once():
    from vllm.utils import cpu_triton_utils

    vllm_seed_patches.apply_all()
    assert cpu_triton_utils._expand_kernel_impl is cpu_expand_kernel.expand_kernel_impl
    assert vllm_seed_patches.apply_all() == []


def test_dist_alias_makes_the_vllm_console_script_work():
    assert "cpu" in importlib.metadata.version("vllm")
    assert not vllm_dist_alias.alias_needed()
    vllm = str(__import__("pathlib").Path(sys.executable).with_name("vllm"))
    out = subprocess.run([vllm, "--version"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().endswith("0.32.0+cpu")
