"""Engines on the embedded model pair, shared by the e2e tests of a session."""

import os

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB of CPU KV cache per engine

import pytest  # noqa: E402

from tests.conftest import DRAFT_DIR, TARGET_DIR  # noqa: E402

NUM_SPEC_TOKENS = 3
# A token budget no prompt batch here exceeds (every prefill in one step); chunked
# seeded prefills have their own engine in test_chunked_seeded_prefill.py.
ENGINE_KW = dict(dtype="float32", max_model_len=1024, seed=0, disable_log_stats=False,
                 enforce_eager=True, max_num_batched_tokens=16384)


def pytest_collection_modifyitems(items):
    for item in items:
        if "/e2e/" in str(item.fspath):
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def plain_llm():
    from vllm import LLM

    return LLM(model=str(TARGET_DIR), **ENGINE_KW)


def make_seed_llm():
    """The SEED engine of the lossless tests: every round drafts, so they exercise
    speculation, not the plain decoding adaptive speculation may switch to
    (test_serve runs the default, adaptive, configuration)."""
    from vllm import LLM

    import vllm_seed

    return LLM(
        model=str(TARGET_DIR),
        **ENGINE_KW,
        **vllm_seed.seed_llm_kwargs(str(DRAFT_DIR), NUM_SPEC_TOKENS, num_drafters=2, adaptive=False),
    )


@pytest.fixture(scope="session")
def seed_llm():
    return make_seed_llm()
