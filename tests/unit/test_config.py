"""SeedConfig and the --speculative-plugin mapping: bad values are named."""

import argparse
import os

import pytest

import vllm_seed

from vllm_seed.cli import apply_to_engine_args, seed_engine_overrides
from vllm_seed.config import SeedConfig, machine_cores, parse_seed_config_json


def config(draft, **kw):
    return SeedConfig.from_dict({"draft_model": draft, "num_speculative_tokens": 3, **kw})


def test_defaults_round_trip(random_llama_dir):
    c = config(random_llama_dir)
    assert c.num_drafters == 1
    assert SeedConfig.from_dict(c.to_dict()) == c


@pytest.mark.parametrize(
    "kw, message",
    [
        ({"num_drafters": 0}, "num_drafters=0 must be an integer in [1,"),
        ({"num_drafters": 10_000}, "num_drafters=10000 must be an integer in [1,"),
        ({"num_drafters": "2"}, "num_drafters='2'"),
        ({"num_speculative_tokens": 0}, "num_speculative_tokens=0"),
        ({"max_wait_ms": -1}, "max_wait_ms=-1 must be a positive number"),
        ({"k_config": [2, 2]}, "k_config=[2, 2] has depth 2 but num_speculative_tokens=3"),
        ({"k_config": [2, 0, 1]}, "k_config=[2, 0, 1] must be a non-empty list of positive integers"),
        ({"k_config": [4, 4, 4]}, "k_config=[4, 4, 4] has 84 nodes; at most 64"),
        ({"k_config": 3}, "k_config=3 must be a list"),
        ({"replacement": 1}, "replacement=1 must be true or false"),
        ({"k_config": [1, 1]}, "k_config=[1, 1] has depth 2 but num_speculative_tokens=3"),
        ({"adaptive": "yes"}, "adaptive='yes' must be true or false"),
        ({"gate": 0}, "gate=0 must be true or false"),
        ({"trim": "yes"}, "trim='yes' must be true or false"),
        ({"draft_head": "fp16"}, "draft_head='fp16' must be one of ['int8', 'float32']"),
        ({"disable_by_batch_size": 0}, "disable_by_batch_size=0 must be an integer in [1,"),
        ({"disable_by_batch_size": 4.5}, "disable_by_batch_size=4.5 must be an integer"),
        ({"bogus": 1}, "unknown key(s) ['bogus']"),
        ({"draft_cpus": [100_000]}, "draft_cpus=[100000] must be among this machine's cores"),
        ({"late_drafts": "wait"}, "late_drafts='wait' must be one of ['decode', 'hold']"),
        ({"k_config": [2, 2, 1], "late_drafts": "decode"},
         "late_drafts='decode' needs chain drafts, not the token tree k_config=[2, 2, 1]"),
    ],
)
def test_bad_values_are_named(random_llama_dir, kw, message):
    with pytest.raises(ValueError) as e:
        config(random_llama_dir, **kw)
    assert message in str(e.value)


def test_draft_cpus_are_checked_against_the_machine_not_the_process(random_llama_dir, monkeypatch):
    """vLLM's CPU worker validates the config again while bound to the cores it
    leaves the drafter out of: a drafter free to use every core is still valid."""
    cores = machine_cores()
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {cores[0]})
    assert config(random_llama_dir, draft_cpus=cores).draft_cpus == tuple(cores)


def test_machine_cores_read_the_containers_cpuset(tmp_path):
    cpuset = tmp_path / "cpuset.cpus.effective"
    cpuset.write_text("0-2,5\n")
    assert machine_cores(str(cpuset)) == [0, 1, 2, 5]
    assert machine_cores(str(tmp_path / "absent")) == list(range(os.cpu_count()))


def test_late_drafts_decode_meanwhile_in_chains_and_hold_in_trees(random_llama_dir):
    assert config(random_llama_dir).late_drafts == "decode"
    assert config(random_llama_dir, k_config=[1, 1, 1]).late_drafts == "decode"  # a chain
    assert config(random_llama_dir, k_config=[2, 2, 1]).late_drafts == "hold"
    assert config(random_llama_dir, late_drafts="hold").late_drafts == "hold"


def test_missing_draft_dir_is_named(tmp_path):
    with pytest.raises(ValueError, match=f"draft model directory '{tmp_path}' has no config.json"):
        config(str(tmp_path))


def test_seed_config_json_errors():
    assert parse_seed_config_json(None) == {}
    with pytest.raises(ValueError, match="--seed-config is not valid JSON"):
        parse_seed_config_json("{num_drafters: 2}")
    with pytest.raises(ValueError, match="must be a JSON object"):
        parse_seed_config_json("[1]")


def test_overrides_map_onto_vllm_seams(random_llama_dir):
    out = seed_engine_overrides({"model": random_llama_dir, "num_speculative_tokens": 4}, {"num_drafters": 2})
    assert out["speculative_config"] == {
        "method": "custom_class",
        "model": "vllm_seed.proposer.SeedProposer",
        "num_speculative_tokens": 4,
    }
    assert out["scheduler_cls"] == "vllm_seed.scheduler.SeedScheduler"
    assert out["worker_cls"] == "vllm_seed.worker.SeedCPUWorker"
    assert out["additional_config"]["seed"]["num_drafters"] == 2
    assert out["additional_config"]["seed"]["draft_model"] == random_llama_dir


def test_draft_length_defaults_to_the_measured_k_or_the_tree_depth(random_llama_dir):
    chain = seed_engine_overrides({"model": random_llama_dir}, {})
    assert chain["additional_config"]["seed"]["num_speculative_tokens"] == 3
    assert chain["speculative_config"]["num_speculative_tokens"] == 3
    tree = seed_engine_overrides({"model": random_llama_dir}, {"k_config": [2, 1]})
    assert tree["additional_config"]["seed"]["num_speculative_tokens"] == 2
    assert tree["speculative_config"]["num_speculative_tokens"] == 2 + 2  # nodes
    llm = vllm_seed.seed_llm_kwargs(random_llama_dir, num_drafters=2)
    assert llm["additional_config"]["seed"]["num_speculative_tokens"] == 3


def test_overrides_need_a_draft_and_reject_foreign_keys(random_llama_dir):
    with pytest.raises(ValueError, match="needs the draft model"):
        seed_engine_overrides({"num_speculative_tokens": 3}, {})
    with pytest.raises(ValueError, match=r"unsupported speculative-config key\(s\) \['prompt_lookup_max'\]"):
        seed_engine_overrides({"model": random_llama_dir, "num_speculative_tokens": 3, "prompt_lookup_max": 2}, {})


def test_cli_flag_rewrites_engine_args(random_llama_dir):
    engine_args = argparse.Namespace(
        speculative_config={"model": random_llama_dir, "num_speculative_tokens": 3},
        additional_config={"other": 1}, scheduler_cls=None, worker_cls="auto",
    )
    args = argparse.Namespace(speculative_plugin="seed", seed_config='{"num_drafters": 2}')
    apply_to_engine_args(engine_args, args)
    assert engine_args.scheduler_cls == "vllm_seed.scheduler.SeedScheduler"
    assert engine_args.additional_config["other"] == 1
    assert engine_args.additional_config["seed"]["num_drafters"] == 2


def test_seed_config_without_plugin_is_an_error():
    with pytest.raises(ValueError, match="--seed-config needs --speculative-plugin seed"):
        apply_to_engine_args(argparse.Namespace(), argparse.Namespace(speculative_plugin=None, seed_config="{}"))


def test_tree_config_counts_its_nodes(random_llama_dir):
    tree = config(random_llama_dir, k_config=[2, 2, 1], replacement=True)
    assert tree.tree.num_nodes == 10 and tree.num_draft_tokens == 10 and tree.replacement
    chain = config(random_llama_dir, k_config=[1, 1, 1])
    assert chain.tree is None and chain.num_draft_tokens == 3


def test_tree_sizes_vllm_draft_slots_by_nodes(random_llama_dir):
    out = seed_engine_overrides({"model": random_llama_dir}, {"k_config": [3, 2, 1]})
    assert out["speculative_config"]["num_speculative_tokens"] == 3 + 6 + 6
    assert out["additional_config"]["seed"]["num_speculative_tokens"] == 3
