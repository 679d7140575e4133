"""Each patch: it fixes what it says, and fails loudly if upstream changes."""

import importlib.metadata
import subprocess
import sys

from types import SimpleNamespace

import numpy as np
import pytest
import torch

import vllm_seed_patches
from vllm_seed_patches import (
    cpu_expand_kernel,
    cpu_generator_offset,
    engine_core_draft_poll,
    vllm_dist_alias,
)

ALL_PATCHES = (cpu_expand_kernel, cpu_generator_offset, engine_core_draft_poll, vllm_dist_alias)
UPSTREAM_HASHES = [kv for p in ALL_PATCHES for kv in vllm_seed_patches.upstream_hashes(p).items()]


@pytest.mark.parametrize("target, sha256", UPSTREAM_HASHES, ids=[t for t, _ in UPSTREAM_HASHES])
def test_upstream_symbol_is_the_one_the_patch_was_written_for(target, sha256):
    # If this fails, vLLM changed the patched code: re-check the bug, then
    # update UPSTREAM_SHA256 or delete the patch (see patches/README.md).
    assert vllm_seed_patches.upstream_source_sha256(target) == sha256


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


def fake_runner(discard):
    """A model runner with one seeded CPU generator per request (seed = batch index)."""
    generators = {i: torch.Generator().manual_seed(i) for i in range(len(discard))}
    return SimpleNamespace(
        input_batch=SimpleNamespace(num_reqs=len(discard), generators=generators),
        discard_request_mask=SimpleNamespace(np=np.array(discard + [False] * 4)),  # padded
    )


def draw(runner, *args):
    """The CPU sampler's use of a generator: one draw per seeded request."""
    return [int(torch.randint(0, 2**31, (1,), generator=g)) for g in runner.input_batch.generators.values()]


def test_upstream_offset_rewind_crashes_on_cpu_generators():
    from vllm.v1.worker.gpu_model_runner import GPUModelRunner

    with pytest.raises(RuntimeError, match="CPU Generator does not use offset"):
        GPUModelRunner._bookkeeping_sync(fake_runner([False, True]), None, None, None, None, 0)


def test_discarded_sample_leaves_the_generator_as_if_it_never_happened():
    runner = fake_runner([False, True, False])
    before = {i: g.get_state() for i, g in runner.input_batch.generators.items()}
    cpu_generator_offset.make_sample(draw)(runner, None, None)
    after = {i: g.get_state() for i, g in runner.input_batch.generators.items()}
    assert torch.equal(after[1], before[1])  # discarded: rewound exactly
    assert not torch.equal(after[0], before[0]) and not torch.equal(after[2], before[2])


def test_bookkeeping_runs_without_the_rewound_generators_and_restores_them():
    runner = fake_runner([True, False, True])
    generators = runner.input_batch.generators
    seen = []
    bookkeeping = cpu_generator_offset.make_bookkeeping_sync(lambda r: seen.append(set(r.input_batch.generators)))
    bookkeeping(runner)
    assert seen == [{1}]
    assert runner.input_batch.generators is generators and set(generators) == {0, 1, 2}


def test_generator_patch_wraps_only_the_cpu_runner_once():
    from vllm.v1.worker import cpu_model_runner
    from vllm.v1.worker.gpu_model_runner import GPUModelRunner

    vllm_seed_patches.apply_all()  # before or after the import, the runner ends patched
    assert cpu_generator_offset.apply() is False
    runner = cpu_model_runner.CPUModelRunner
    assert runner._sample is not GPUModelRunner._sample
    assert runner._bookkeeping_sync is not GPUModelRunner._bookkeeping_sync
    assert runner._sample.__qualname__.startswith("make_sample")


def fake_engine_core(scheduler):
    """An engine core whose worker has a draft waiting for request r."""
    draft = SimpleNamespace(req_ids=["r"], draft_token_ids=[[7]])
    executor = SimpleNamespace(polls=0)

    def take_draft_token_ids():
        executor.polls += 1
        return draft

    executor.take_draft_token_ids = take_draft_token_ids
    scheduler.updates = []
    scheduler.update_draft_token_ids = scheduler.updates.append
    return SimpleNamespace(
        scheduler=scheduler, model_executor=executor,
        check_for_draft_tokens=True, async_scheduling=False,
    )


def test_engine_core_polls_the_worker_only_for_schedulers_that_do_not_draft():
    from vllm.v1.engine.core import EngineCore

    from vllm_seed.scheduler import SeedScheduler

    vllm_seed_patches.apply_all()
    assert engine_core_draft_poll.apply() is False  # once per process
    assert SeedScheduler.supplies_draft_tokens
    seed = fake_engine_core(SimpleNamespace(supplies_draft_tokens=True))
    EngineCore.post_step(seed, model_executed=True)
    assert seed.model_executor.polls == 0 and seed.scheduler.updates == []
    stock = fake_engine_core(SimpleNamespace())  # vLLM's own schedulers
    EngineCore.post_step(stock, model_executed=True)
    assert stock.model_executor.polls == 1
    assert stock.scheduler.updates[0].draft_token_ids == [[7]]


def test_patch_on_import_waits_for_the_module(tmp_path, monkeypatch):
    from vllm_seed_patches._on_import import patch_on_import

    (tmp_path / "seed_late_module.py").write_text("VALUE = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    patched = []
    assert patch_on_import("seed_late_module", patched.append) is True
    assert patch_on_import("seed_late_module", patched.append) is False  # one hook
    assert patched == []  # not imported yet
    import seed_late_module

    assert patched == [seed_late_module]
    monkeypatch.delitem(sys.modules, "seed_late_module")


def test_dist_alias_makes_the_vllm_console_script_work():
    assert "cpu" in importlib.metadata.version("vllm")
    assert not vllm_dist_alias.alias_needed()
    vllm = str(__import__("pathlib").Path(sys.executable).with_name("vllm"))
    out = subprocess.run([vllm, "--version"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().endswith("0.32.0+cpu")
