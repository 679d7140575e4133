"""Seeded requests with chunked prefills (patch cpu_generator_offset): no crash, and
each request's RNG stream is exact, i.e. its tokens equal those of the same request
prefilled in one step. Without the patch the engine dies."""

import os
import sys

import pytest

from tests.e2e.chunked_prefill import MAX_NUM_BATCHED_TOKENS, chunked_llm, long_prompts, seeded_tokens
from tests.e2e.sampling import run_script


@pytest.fixture(scope="module")
def small_budget_llm():
    return chunked_llm()


def test_every_prompt_needs_a_chunked_prefill(small_budget_llm):
    tokenizer = small_budget_llm.get_tokenizer()
    assert min(len(tokenizer.encode(p)) for p in long_prompts()) > MAX_NUM_BATCHED_TOKENS


def test_chunked_seeded_prefill_samples_like_an_unchunked_one(small_budget_llm, plain_llm):
    # plain_llm: same engine arguments, but a budget that fits every prompt batch.
    chunked = seeded_tokens(small_budget_llm)
    assert chunked == seeded_tokens(plain_llm)


def test_chunked_seeded_prefill_crashes_without_the_patch():
    env = dict(os.environ, SEED_DISABLE_PATCHES="cpu_generator_offset")
    cmd = [sys.executable, "-m", "tests.e2e.chunked_prefill"]
    run = run_script(cmd, timeout=600, env=env)
    assert run.returncode != 0
    assert "CPU Generator does not use offset" in run.stdout
