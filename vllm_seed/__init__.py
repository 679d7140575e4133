"""vllm-seed: SEED (Scheduled spEculativE Decoding) as a vLLM plugin.

``register()`` is the ``vllm.general_plugins`` entry point. vLLM calls it in
every process (CLI before argument parsing, engine core, workers); it is
re-entrant and idempotent, imports lazily, applies the runtime patches and
adds ``--speculative-plugin`` / ``--seed-config`` to the vLLM CLI.
"""

from __future__ import annotations

__version__ = "0.1.0"

_registered = False


def register() -> None:
    global _registered
    if _registered:
        return
    _registered = True
    from vllm_seed import _vllm_compat, cli, metrics

    _vllm_compat.check_vllm_version()
    import vllm_seed_patches

    vllm_seed_patches.apply_all()
    cli.extend_engine_args()
    metrics.install_collector()


def seed_llm_kwargs(
    draft_model: str, num_speculative_tokens: int | None = None, **seed_config
) -> dict:
    """Keyword arguments that make ``vllm.LLM(...)`` run SEED.

    Example: ``LLM(model=TARGET, **seed_llm_kwargs("DRAFT", 3, num_drafters=2))``.
    """
    from vllm_seed.cli import seed_engine_overrides

    register()
    spec = {"model": draft_model}
    if num_speculative_tokens is not None:  # else the tree's depth, or the default
        spec["num_speculative_tokens"] = num_speculative_tokens
    return seed_engine_overrides(spec, seed_config)
