"""SEED is lossless: greedy token-identical to plain vLLM; at T > 0 the same
distribution (two-sample chi-square), a test that fails without the CPU patch."""

import json
import os
import sys

import pytest

from tests.e2e.conftest import NUM_SPEC_TOKENS
from tests.e2e.late_sampler import LATE_TOKENS
from tests.e2e.trim_sampler import TOKENS as TRIM_TOKENS
from tests.e2e.sampling import (
    greedy, greedy_workload, gsm8k_prompts, run_script, sample_tokens, spec_counters, two_sample_pvalues,
)

ALPHA = 1e-3  # per position; 4 positions x 2 temperatures, 8 x 2 for late and cut drafts
NUM_SAMPLES = 400


def test_greedy_is_token_identical_over_prompts_lengths_and_batch_mixes(plain_llm, seed_llm):
    prompts, lengths = greedy_workload()
    expected = greedy(plain_llm, prompts, lengths)
    before = spec_counters(seed_llm)
    assert greedy(seed_llm, prompts, lengths) == expected
    assert greedy(seed_llm, prompts, lengths, extra=gsm8k_prompts(6)) == expected
    for i in range(0, 30, 10):  # other batch compositions
        assert greedy(seed_llm, prompts[i : i + 3], lengths[i : i + 3]) == expected[i : i + 3]
    after = spec_counters(seed_llm)
    drafted, accepted, drafts = (after[f"vllm:spec_decode_num_{name}"] - before.get(f"vllm:spec_decode_num_{name}", 0)
                                 for name in ("draft_tokens", "accepted_tokens", "drafts"))
    assert drafted > 1000 and accepted > 0.3 * drafted  # SEED really speculated
    print(f"drafts {drafts}, draft tokens {drafted}: {drafted / drafts:.2f} per draft")
    assert drafts < drafted < NUM_SPEC_TOKENS * drafts  # of adaptive lengths, short and long


@pytest.mark.parametrize("temperature", [0.2, 1.0])
def test_sampling_follows_the_target_distribution(plain_llm, seed_llm, temperature):
    plain = sample_tokens(plain_llm, temperature, NUM_SAMPLES, seed0=0)
    seed = sample_tokens(seed_llm, temperature, NUM_SAMPLES, seed0=100_000)
    pvalues = two_sample_pvalues(plain, seed)
    assert min(pvalues) > ALPHA, pvalues


def run_lossless_sampler(module: str, plain_llm, out, tokens: int) -> dict:
    """Run an engine script of tests/e2e (greedy outputs, then NUM_SAMPLES samples of
    ``tokens`` tokens at T=0.2 and 1) and check it against plain vLLM: greedy
    token-identical, samples of the same distribution. Returns the script's JSON."""
    cmd = [sys.executable, "-m", module, str(out), "0.2,1", str(NUM_SAMPLES)]
    run = run_script(cmd, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(out.read_text())
    prompts, lengths = greedy_workload(12)
    assert result["greedy"] == greedy(plain_llm, prompts, lengths)
    for t in (0.2, 1.0):
        plain = sample_tokens(plain_llm, t, NUM_SAMPLES, seed0=0, tokens=tokens)
        pvalues = two_sample_pvalues(plain, result[f"samples_{t:g}"])
        assert min(pvalues) > ALPHA, (t, pvalues)
    return result


def test_drafts_verified_after_their_branch_decoded_meanwhile_are_lossless(plain_llm, tmp_path):
    """Every draft one step late (tests/e2e/late_sampler.py): each round, the branch decodes a
    plain token meanwhile and the rest of its draft is verified only if it begins with it."""
    late = run_lossless_sampler("tests.e2e.late_sampler", plain_llm, tmp_path / "late.json", LATE_TOKENS)
    # The path under test ran: drafts were caught up, and no branch was held back. At T=1 this
    # pair's draft rarely begins with the target's sampled token (far less often than at T=0.2
    # in the run that set these bounds), so T=0.2 is the temperature with power here.
    assert late["greedy_late_drafts_verified"] > 50
    assert late["late_drafts_verified_0.2"] > NUM_SAMPLES and late["late_drafts_verified_1"] > 0
    assert late["held_back_steps"] == 0


def test_drafts_cut_by_confidence_are_lossless(plain_llm, tmp_path):
    """Drafts cut before their first token the draft is not sure enough of
    (tests/e2e/trim_sampler.py): verified in part, or not at all (a plain
    step). Greedy stays token-identical; at T > 0 the target's distribution."""
    trim = run_lossless_sampler("tests.e2e.trim_sampler", plain_llm, tmp_path / "trim.json", TRIM_TOKENS)
    for cuts in (trim["greedy_cuts"], trim["cuts_0.2"], trim["cuts_1"]):  # the paths under test ran
        assert min(cuts.values()) > 20, cuts


def test_the_distribution_test_fails_without_the_cpu_patch(plain_llm, tmp_path):
    out = tmp_path / "unpatched.json"
    env = dict(os.environ, SEED_DISABLE_PATCHES="cpu_expand_kernel")
    cmd = [sys.executable, "-m", "tests.e2e.unpatched_sampler", str(out), "1.0", str(NUM_SAMPLES)]
    run = run_script(cmd, timeout=900, env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    unpatched = json.loads(out.read_text())
    plain = sample_tokens(plain_llm, 1.0, NUM_SAMPLES, seed0=0)
    assert min(two_sample_pvalues(plain, unpatched)) < ALPHA
