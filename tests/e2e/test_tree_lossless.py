"""Token trees (MCSD k_config) through the served plugin are lossless: greedy
token-identical to plain vLLM, and at T > 0 the target's distribution."""

import json
import sys

import pytest

from tests.e2e.sampling import greedy, greedy_workload, run_script, sample_tokens, two_sample_pvalues
from tests.e2e.tree_engine import NUM_SAMPLES

ALPHA = 1e-3  # per position
TEMPERATURES = (0.2, 1.0)
CASES = {  # name: (seed config, temperatures sampled)
    "chain-111": ({"k_config": [1, 1, 1]}, ()),
    "tree-211": ({"k_config": [2, 1, 1]}, ()),
    "tree-221": ({"k_config": [2, 2, 1]}, TEMPERATURES),
    "tree-221-replacement": ({"k_config": [2, 2, 1], "replacement": True}, TEMPERATURES),
    "tree-321": ({"k_config": [3, 2, 1]}, ()),
    # 32-token KV blocks (the README's advice for ToT on CPU): the target's KV and tree
    # attention's reads of it use another layout of blocks.
    "chain-111-block32": ({"k_config": [1, 1, 1], "block_size": 32}, ()),
    "tree-221-block32": ({"k_config": [2, 2, 1], "block_size": 32}, ()),
}


@pytest.fixture(scope="module")
def plain_greedy(plain_llm):
    prompts, lengths = greedy_workload()
    return greedy(plain_llm, prompts, lengths)


@pytest.fixture(scope="module")
def plain_samples(plain_llm):
    return {t: sample_tokens(plain_llm, t, NUM_SAMPLES, seed0=0) for t in TEMPERATURES}


@pytest.mark.parametrize("name", CASES)
def test_tree_is_lossless(name, plain_greedy, plain_samples, tmp_path):
    seed_config, temperatures = CASES[name]
    out = tmp_path / "tree.json"
    cmd = [sys.executable, "-m", "tests.e2e.tree_engine", str(out), json.dumps(seed_config)]
    run = run_script(cmd + [str(t) for t in temperatures], timeout=900)
    assert run.returncode == 0, run.stderr[-4000:]
    result = json.loads(out.read_text())
    assert result["greedy"] == plain_greedy
    assert result["greedy_mixed"] == plain_greedy
    assert all(len(tokens) == 8 for tokens in result["cached_but_last_token"])
    counters = result["counters"]
    drafted = counters["vllm:spec_decode_num_draft_tokens"]
    accepted = counters["vllm:spec_decode_num_accepted_tokens"]
    assert drafted > 1000 and accepted > 0.1 * drafted  # trees were really verified
    for t in temperatures:
        pvalues = two_sample_pvalues(plain_samples[t], result["samples"][str(t)])
        assert min(pvalues) > ALPHA, (t, pvalues)
