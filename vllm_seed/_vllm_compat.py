"""The one module that touches vLLM internals (vLLM 0.32.x).

Everything vllm-seed needs from vLLM beyond its public API is imported or
looked up here, so a vLLM upgrade is reviewed in one place.
"""

from __future__ import annotations

SUPPORTED_VLLM = ("0.32.0", "0.33.0")  # [lo, hi)

SCHEDULER_CLS = "vllm_seed.scheduler.SeedScheduler"
PROPOSER_CLS = "vllm_seed.proposer.SeedProposer"
WORKER_CLS = {
    "cpu": "vllm_seed.worker.SeedCPUWorker",
    "gpu": "vllm_seed.worker.SeedGPUWorker",
}


def check_vllm_version(version: str | None = None) -> str:
    """Fail fast outside the vLLM range this plugin was built against."""
    from packaging.version import Version

    if version is None:
        import vllm

        version = vllm.__version__
    base = Version(Version(version).base_version)
    lo, hi = (Version(v) for v in SUPPORTED_VLLM)
    if not lo <= base < hi:
        raise RuntimeError(
            f"vllm-seed supports vLLM >={lo},<{hi}; found vLLM {version}. "
            f"Install a supported version: pip install 'vllm>={lo},<{hi}'"
        )
    return version


def platform_kind() -> str:
    from vllm.platforms import current_platform

    return "cpu" if current_platform.is_cpu() else "gpu"


def engine_args_cls():
    from vllm.engine.arg_utils import EngineArgs

    return EngineArgs


def scheduler_base():
    from vllm.v1.core.sched.scheduler import Scheduler

    return Scheduler


class _SameDraftLength:
    """vLLM's per-batch-size draft-length table (dynamic SD) with the
    configured length at every batch size."""

    def __init__(self, num_spec_tokens: int):
        self.num_spec_tokens = num_spec_tokens

    def __getitem__(self, batch_size: int) -> int:
        return self.num_spec_tokens


def disable_placeholder_drafts(scheduler) -> None:
    """Keep vLLM's scheduler from giving a new request placeholder drafts.

    ``Scheduler.schedule`` pads a waiting request with one token left to
    compute (a prompt cached but for its last token, a resumed request) to
    1 + num_spec_tokens tokens with -1 "drafts", for uniform CUDA-graph
    batches, unless a dynamic-SD table is set. SEED's drafts come from its
    rounds alone: a placeholder would reach the worker as a draft without q
    (tree verification fails the step at T > 0) and count in acceptance. A
    table of the configured length turns the padding off and leaves the draft
    length vLLM schedules as it was."""
    if scheduler.dynamic_sd_lookup is None:
        scheduler.dynamic_sd_lookup = _SameDraftLength(scheduler.num_spec_tokens)


def worker_bases():
    """(CPU worker, GPU worker) base classes of this vLLM build."""
    from vllm.v1.worker.gpu_worker import Worker

    try:
        from vllm.v1.worker.cpu_worker import CPUWorker
    except ImportError:  # GPU-only builds
        CPUWorker = Worker
    return CPUWorker, Worker


def set_runner_draft_probs(runner, probs, req_ids: list[str]) -> None:
    """Hand draft probabilities q to the standard rejection sampler.

    The V1 runner reads ``_draft_probs[row, :num_draft]`` for each request
    with drafts, looking rows up by ``_draft_prob_req_ids``; it resets both
    after sampling (gpu_model_runner.py, ``_get_spec_decode_draft_probs``).
    """
    runner._draft_probs = probs
    runner._draft_prob_req_ids = req_ids


# --- token-tree verification (tree_verify.py) ---------------------------------

PLACEHOLDER_TOKEN_ID = -1  # vllm.v1.sample.rejection_sampler: a rejected slot


def apply_top_k_top_p(logits, top_k, top_p):
    from vllm.v1.sample.ops.topk_topp_sampler import apply_top_k_top_p as apply

    return apply(logits, top_k, top_p)


def attention_impls(runner):
    """(impl, layer) of every attention layer of the runner's model."""
    from vllm.model_executor.layers.attention.attention import Attention

    return [(m.impl, m) for m in runner.get_model().modules() if isinstance(m, Attention)]


def wrap_prepare_inputs(runner, after) -> None:
    """Call ``after()`` once vLLM has built positions and slot mappings.

    ``GPUModelRunner._prepare_inputs`` fills ``runner.positions`` and derives
    the slot mapping from it; the model reads ``runner.positions`` later."""
    original = runner._prepare_inputs

    def _prepare_inputs(*args, **kwargs):
        result = original(*args, **kwargs)
        after()
        return result

    runner._prepare_inputs = _prepare_inputs


def wrap_rejection_sampler(runner, sample) -> None:
    """``runner.rejection_sampler(...)`` becomes ``sample(original, ...)``."""
    original = runner.rejection_sampler
    runner.rejection_sampler = lambda *args: sample(original, *args)


def query_start(runner):
    """[num_reqs + 1] flat index of each request's first scheduled token."""
    return runner.query_start_loc.np


def positions(runner):
    return runner.positions
