"""SEED on the SmolLM2-135M-Instruct pair (issue 5) is lossless: greedy token-identical to plain
vLLM on ToT chat prompts, alone and in a batch mixed with T=1 requests, for chain drafts and a
(2, 2, 1) token tree; at T=0.2 and 1.0 the chain's samples follow the target's distribution."""

import json
import sys

import pytest

from tests.e2e.sampling import run_script, two_sample_pvalues

ALPHA = 1e-3  # per position
TEMPERATURES = (0.2, 1.0)


def run_engine(tmp_path, mode: str, temperatures=()) -> dict:
    out = tmp_path / f"{abs(hash(mode))}.json"
    cmd = [sys.executable, "-m", "tests.e2e.smollm2_engine", str(out), mode]
    run = run_script(cmd + [str(t) for t in temperatures], timeout=1200)
    assert run.returncode == 0, run.stderr[-4000:]
    return json.loads(out.read_text())


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    return run_engine(tmp_path_factory.mktemp("plain"), "plain", TEMPERATURES)


@pytest.mark.parametrize("name,seed_config,temperatures", [
    ("chain", {}, TEMPERATURES),
    ("tree-221", {"k_config": [2, 2, 1]}, ()),
])
def test_seed_on_smollm2_is_lossless(plain, tmp_path, name, seed_config, temperatures):
    result = run_engine(tmp_path, json.dumps(seed_config), temperatures)
    assert result["greedy"] == plain["greedy"]
    assert result["greedy_mixed"] == plain["greedy"]
    counters = result["counters"]
    drafted = counters["vllm:spec_decode_num_draft_tokens"]
    accepted = counters["vllm:spec_decode_num_accepted_tokens"]
    assert drafted > 300 and accepted > 0  # the draft was really verified
    for t in temperatures:
        pvalues = two_sample_pvalues(plain["samples"][str(t)], result["samples"][str(t)])
        assert min(pvalues) > ALPHA, (t, pvalues)
