"""benchmarks/bench_tot.py: run order, configs -> `vllm serve` argv, rows and the table."""

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from _report import build_rows, markdown_table, profile_table  # noqa: E402
import _servers  # noqa: E402
from _servers import CONFIGS, VLLM, Server, server_argv  # noqa: E402
from bench_tot import parse_args, run_order, tot_config  # noqa: E402

PAIR = Path("/m")
BASE = [VLLM, "serve", "/m/target", "--host", "127.0.0.1", "--port", "8001",
        "--dtype", "float32", "--max-model-len", "2048", "--kv-cache-memory-bytes", "1073741824"]


def test_run_order_alternates_configs_innermost():
    order = run_order(2, [0.0, 1.0], ["latency", "throughput"], ["plain", "sd-k1"])
    assert len(order) == 16
    assert order[:5] == [(0, 0.0, "latency", "plain"), (0, 0.0, "latency", "sd-k1"),
                         (0, 0.0, "throughput", "plain"), (0, 0.0, "throughput", "sd-k1"),
                         (0, 1.0, "latency", "plain")]
    assert order[8] == (1, 0.0, "latency", "plain")


def test_config_names():
    assert list(CONFIGS) == ["plain", "sd-k1", "sd-k2", "sd-k3", "sd-k4",
                             "seed-d1", "seed-d2", "seed-d3", "seed-d1-fixed",
                             "seed-d1-k1", "seed-d1-k2", "seed-d1-k4", "seed-d1-k1-fixed", "seed-d1-f32head",
                             "seed-d1-fixedlen", "seed-d1-hold", "seed-d1-nice15",
                             "seed-d1-nogate", "seed-d1-notrim", "seed-d1-nowarm", "seed-d1-dbs1", "seed-d1-dbs8",
                             "seed-d1-anycore", "seed-d1-poll",
                             "seed-t211", "seed-t221", "seed-t321", "seed-t222", "seed-t221-r",
                             "seed-t211-fixed", "seed-t221-fixed", "seed-t321-fixed", "seed-t222-fixed",
                             "seed-t221-r-fixed", "plain-b32", "sd-k1-b32", "seed-d1-b32",
                             "seed-d1-hold-b32", "seed-d1-nice15-b32",
                             "seed-d1-nogate-b32", "seed-d1-notrim-b32", "seed-d1-nowarm-b32", "seed-d1-dbs1-b32", "seed-d1-dbs8-b32",
                             "seed-d1-anycore-b32", "seed-d1-k1-fixed-b32", "plain-sync-b32",
                             "plain-log-b32"]


def test_plain_sync_is_plain_without_async_scheduling():
    config = CONFIGS["plain-sync-b32"]
    assert (config.speculative, config.seed) == (None, None)
    assert server_argv(config, PAIR, 8001)[-3:] == ["--block-size", "32", "--no-async-scheduling"]


def test_plain_log_is_plain_with_the_logged_scheduler():
    config = CONFIGS["plain-log-b32"]
    assert (config.speculative, config.seed) == (None, None)
    argv = server_argv(config, PAIR, 8001)
    assert argv[-4:] == ["--block-size", "32", "--scheduler-cls", "vllm_seed.plain_step_log.StepLoggedScheduler"]


def test_b32_configs_add_the_block_size():
    argv = server_argv(CONFIGS["seed-d1-b32"], PAIR, 8001, extra=("--enforce-eager",))
    assert argv[len(BASE):len(BASE) + 3] == ["--enforce-eager", "--block-size", "32"]
    assert argv[len(BASE) + 3:] == server_argv(CONFIGS["seed-d1"], PAIR, 8001)[len(BASE):]


def test_plain_argv():
    assert server_argv(CONFIGS["plain"], PAIR, 8001) == BASE
    argv = server_argv(CONFIGS["plain"], PAIR, 8001, kv_cache_mib=256, extra=("--enforce-eager",))
    assert argv == [*BASE[:-1], "268435456", "--enforce-eager"]


def test_stock_sd_argv():
    argv = server_argv(CONFIGS["sd-k3"], PAIR, 8001)
    assert argv[:-2] == BASE and argv[-2] == "--speculative-config"
    assert json.loads(argv[-1]) == {"model": "/m/draft", "method": "draft_model",
                                    "num_speculative_tokens": 3,
                                    "draft_sample_method": "probabilistic"}


def test_seed_argv():
    argv = server_argv(CONFIGS["seed-d2"], PAIR, 8001)
    assert argv[:-6] == BASE
    assert argv[-6:-2] == ["--speculative-plugin", "seed", "--seed-config",
                           '{"num_drafters": 2, "adaptive": true}']
    assert json.loads(server_argv(CONFIGS["seed-d1-fixed"], PAIR, 8001)[-3]) == {
        "num_drafters": 1, "adaptive": False}
    assert argv[-2] == "--speculative-config"
    assert json.loads(argv[-1]) == {"model": "/m/draft", "num_speculative_tokens": 3}
    assert json.loads(server_argv(CONFIGS["seed-d1-k2"], PAIR, 8001)[-1]) == {
        "model": "/m/draft", "num_speculative_tokens": 2}


def test_poll_row_is_seed_d1_with_the_poll_patch_off(monkeypatch, tmp_path):
    config = CONFIGS["seed-d1-poll"]
    assert server_argv(config, PAIR, 8001) == server_argv(CONFIGS["seed-d1"], PAIR, 8001)
    envs = []
    monkeypatch.delenv("SEED_DISABLE_PATCHES", raising=False)
    monkeypatch.setattr(_servers.subprocess, "Popen", lambda *a, env, **kw: envs.append(env))
    for name in ("seed-d1-poll", "seed-d1"):
        Server(CONFIGS[name], ["true"], tmp_path / f"{name}.log", 8001).start()
    assert envs[0]["SEED_DISABLE_PATCHES"] == "engine_core_draft_poll"
    assert "SEED_DISABLE_PATCHES" not in envs[1]


def test_quick_options():
    args = parse_args(["--quick"])
    assert (args.reps, args.temperatures, args.modes, args.latency_problems, args.configs) == (
        1, [0.0], ["latency"], 1, ["plain", "sd-k3", "seed-d1"])
    assert args.enforce_eager


def test_ignore_eos_reaches_the_tot_config():
    server = Server(CONFIGS["plain"], [], Path("/tmp/plain.log"), 8001)
    for argv, expected in ((["--ignore-eos"], True), ([], False)):
        args = parse_args(["--pair-dir", "/m", *argv])
        assert tot_config(args, server, "latency", 1.0).ignore_eos is expected


def test_unknown_config_is_rejected():
    with pytest.raises(SystemExit):
        parse_args(["--configs", "plain,sd-k9"])


def record(config, rep, tps, accepted=0.0, error=None):
    spec = {"num_drafts": 10.0 if accepted else 0.0, "num_draft_tokens": 30.0 if accepted else 0.0,
            "num_accepted": accepted, "per_pos": {0: accepted} if accepted else {}}
    rec = {"config": config, "temperature": 0.0, "mode": "latency", "rep": rep, "error": error}
    if error is None:
        rec.update(tokens_per_s=tps, accuracy=rep % 2, spec=spec,
                   probe={"ttft_s": 0.1 * (rep + 1), "tpot_s": 0.01},
                   prefix_cache={"queries": 100.0, "hits": 10.0 * rep})
    return rec


def test_rows_median_speedup_acceptance_and_error_row():
    order = run_order(3, [0.0], ["latency"], ["plain", "sd-k1", "seed-d1"])
    records = [record("plain", r, tps) for r, tps in enumerate([10.0, 12.0, 11.0])]
    records += [record("sd-k1", r, tps, accepted=5.0) for r, tps in enumerate([20.0, 33.0, 22.0])]
    records += [record("seed-d1", r, 0, error="exited with code 1") for r in range(3)]
    rows = build_rows(records, order, {"plain": 2**30})
    plain, sd, seed = rows
    assert plain["tokens_per_s"] == {"median": 11.0, "min": 10.0, "max": 12.0}
    assert plain["speedup_vs_plain"] == 1.0 and plain["peak_rss_mib"] == 1024.0
    assert sd["speedup_vs_plain"] == 2.0
    assert sd["spec_decode"] == {"acceptance_rate": 0.5 / 3, "per_position": [0.5],
                                 "mean_acceptance_length": 1.5}
    # E bound: mean acceptance length x plain tok/s = 16.5; 22 / 16.5 = 133% (fake numbers).
    assert sd["e_bound_efficiency"] == pytest.approx(2.0 / 1.5)
    assert plain["e_bound_efficiency"] is None
    assert sd["ttft_s"] == pytest.approx(0.2) and sd["accuracy"] == pytest.approx(1 / 3)
    assert seed["error"] == "exited with code 1" and seed["tokens_per_s"] is None
    table = markdown_table(rows).splitlines()
    assert table[0].startswith("| config | T | mode | output tok/s, median (min–max) "
                               "| speedup vs plain | paired ratio")
    assert table[2].startswith(
        "| plain | 0 | latency | 11.0 (10.0–12.0) | 1.00× | – | – | – | – | 200 |")
    # Paired per rep: 20/10, 33/12, 22/11 -> median 2.00; 3 pairs are too few for a 95% CI.
    assert table[3].startswith(
        "| sd-k1 | 0 | latency | 22.0 (20.0–33.0) | 2.00× | 2.00 (n=3) | 1.50 | 0.50 | 133% | 200 |")
    assert sd["prefix_cache_hit_rate"] == pytest.approx(30 / 300)  # summed over repetitions
    assert table[3].endswith("| 10.0 | 10% | – | 0.33 |")
    assert table[4].startswith("| seed-d1 | 0 | latency | error: exited with code 1 |")
    assert table[4].count("|") == table[3].count("|")
    assert profile_table(rows) == ""  # no SEED counters in these records


def test_paired_ratios_pair_each_rep_with_the_baselines_and_skip_errors():
    order = run_order(8, [0.0], ["latency"], ["plain-b32", "seed-d1-b32"])
    plain = [10.0, 20.0, 10.0, 20.0, 10.0, 20.0, 10.0, 20.0]  # drifts between two speeds
    seed = [9.5, 19.0, 9.5, 19.0, 9.5, 19.0, 9.5, 19.0]  # always 0.95x of its pair
    records = [record("plain-b32", r, tps) for r, tps in enumerate(plain)]
    records += [record("seed-d1-b32", r, tps) for r, tps in enumerate(seed)]
    records[7] = record("plain-b32", 7, 0, error="timeout")  # rep 7 has no pair
    rows = build_rows(records, order, {})
    assert [r["baseline"] for r in rows] == ["plain-b32", "plain-b32"]
    ratio = rows[1]["paired_ratio"]
    assert ratio["n"] == 7 and ratio["median"] == pytest.approx(0.95)
    assert (ratio["low"], ratio["high"]) == (pytest.approx(0.95), pytest.approx(0.95))
    # The ratio of medians mixes the two speeds (plain's 7 reps have median 10, SEED's 8 have
    # 14.25): it says 1.43x where every pair says 0.95x.
    assert rows[1]["speedup_vs_plain"] == pytest.approx(14.25 / 10.0)
    table = markdown_table(rows).splitlines()
    assert "| speedup vs plain-b32 |" in table[0]
    assert "| 1.43× | 0.95 [0.95, 0.95] |" in table[3]


def test_baseline_is_plain_else_the_first_plain_variant():
    from _report import baseline

    assert baseline(["seed-d1", "plain-b32", "plain", "sd-k1"]) == "plain"
    assert baseline(["seed-d1-b32", "plain-sync-b32", "plain-b32"]) == "plain-sync-b32"
    assert baseline(["seed-d1", "sd-k1"]) is None


def test_median_interval_is_the_sign_tests_order_statistics():
    from _metrics import median_interval

    # n = 10: [x(2), x(9)] covers 1 - 2 * 11/1024; [x(3), x(8)] would cover only 89%.
    ten = median_interval([7, 1, 9, 3, 5, 2, 8, 10, 4, 6])
    assert ten == {"median": 5.5, "low": 2, "high": 9, "coverage": 1 - 22 / 1024, "n": 10}
    assert median_interval(range(1, 7))["coverage"] == 1 - 2 / 64  # n = 6: [min, max]
    assert median_interval([1, 2, 3, 4, 5])["low"] is None  # [min, max] covers only 94%
    assert median_interval([]) is None


def test_profile_table_sums_seed_counters_over_repetitions():
    order = run_order(2, [0.0], ["latency"], ["plain", "seed-d1"])
    records = [record("plain", r, 10.0) for r in range(2)]
    for r in range(2):
        rec = record("seed-d1", r, 12.0, accepted=5.0)
        rec["wall_time_s"] = 5.0
        rec["seed"] = {"engine_steps": 50.0, "draft_jobs": 10.0, "blocked_wait_seconds": 0.5,
                       "draft_transfer_seconds": 0.01, "draft_undelivered_seconds": 0.02,
                       "drafter_busy_seconds{drafter=0}": 1.0, "gate_shut_steps": 15.0,
                       "late_branch_steps": 20.0, "held_back_branch_steps": 5.0,
                       "late_drafts_verified": 3.0, "late_drafts_dropped": 1.0,
                       "drafts_verified": 9.0, "trimmed_drafts": 1.0, "trimmed_draft_tokens": 4.0,
                       "engine_phase_seconds{phase=target_verify}": 2.0}
        records.append(rec)
    rows = build_rows(records, order, {})
    assert rows[0]["seed_profile"] is None
    assert rows[1]["seed_profile"]["engine_steps"] == 100.0
    line = profile_table(rows).splitlines()[2]
    # 4 s of verify steps and 1 s blocked in 10 s; 40 late and 10 held branch-steps in 100
    # steps, 6 of 8 late drafts caught up; 2 of 20 landed drafts cut to nothing, 8 tokens cut;
    # drafter busy 2 s; per call 100/1/2 ms.
    assert line.startswith("| seed-d1 | 0 | latency | 100 (50.0) | 0.0% | 0.0% | 10.0% | 40.0% |")
    assert line.endswith("| 50.0% | 30% / 0% | 0.40 / 0.10 | 75% | 10% / 0.40 | 20% | 100.0 / 1.00 / 2.0 |")


def test_demo_serves_seed_with_unchunked_prefills(monkeypatch):
    import demo_tot

    monkeypatch.setattr(sys, "argv", ["demo_tot.py", "--pair", "tiny", "--pair-dir", "/m"])
    args = demo_tot.parse_args()
    argv = demo_tot.demo_argv(demo_tot.demo_config(args), args, 8001)
    assert argv[:len(BASE)] == BASE
    assert argv[len(BASE):len(BASE) + 2] == ["--max-num-batched-tokens", "16384"]
    assert argv[argv.index("--speculative-plugin") + 1] == "seed"
    assert json.loads(argv[argv.index("--speculative-config") + 1])["model"] == "/m/draft"


def test_server_argv_options_are_keyword_only():
    with pytest.raises(TypeError):  # a tuple of flags once landed in kv_cache_mib
        server_argv(CONFIGS["plain"], PAIR, 8001, ("--enforce-eager",))


def test_tree_rows_show_acceptance_per_level_and_their_seed_config():
    from _report import _levels

    assert _levels([0.97, 0.9, 0.8, 0.0, 0.0, 0.0, 0.0]) == [0.97, 0.9, 0.8]
    assert _levels([0.5, 0.0, 0.25]) == [0.5, 0.0, 0.25] and _levels([0.0]) == [0.0]
    tree = CONFIGS["seed-t221-r-fixed"]
    assert tree.seed == {"num_drafters": 1, "adaptive": False, "k_config": [2, 2, 1], "replacement": True}
    assert tree.speculative == {"num_speculative_tokens": 3}


def test_pairs_name_their_directory_and_prompt_format(tmp_path):
    from _servers import MODELS, PAIRS, pair_from_args

    assert PAIRS["tiny"].dir == MODELS and PAIRS["tiny"].api == "completions"
    assert PAIRS["smollm2"].dir == MODELS / "smollm2" and PAIRS["smollm2"].api == "chat"
    moved = pair_from_args("smollm2", tmp_path)
    assert moved.dir == tmp_path and moved.api == "chat"
    with pytest.raises(SystemExit, match="unknown pair 'big'; choose from tiny, smollm2"):
        pair_from_args("big", None)


def test_a_missing_pair_directory_says_how_to_build_it(tmp_path):
    from _servers import PAIRS, Pair

    missing = Pair("smollm2", tmp_path, "chat", PAIRS["smollm2"].missing)
    with pytest.raises(SystemExit, match=r"no model in .*target \(pair 'smollm2'\).*make install"):
        missing.check()


def test_demo_defaults_to_the_smollm2_pair_over_chat(monkeypatch):
    import demo_tot

    monkeypatch.setattr(sys, "argv", ["demo_tot.py"])
    args = demo_tot.parse_args()
    assert args.pair.name == "smollm2" and args.pair.api == "chat"
    assert demo_tot.demo_argv(demo_tot.demo_config(args), args, 8001)[2].endswith("smollm2/target")
    assert parse_args(["--pair", "smollm2"]).pair_dir.name == "smollm2"


def test_model_info_counts_the_params_of_one_file_or_of_an_index_shards(tmp_path):
    import json

    import torch
    from safetensors.torch import save_file

    from _report import model_info

    one, sharded = tmp_path / "one", tmp_path / "sharded"
    weights = {"a": torch.zeros(3, 4), "b": torch.zeros(5)}
    for d in (one, sharded):
        d.mkdir()
        (d / "config.json").write_text(json.dumps({"hidden_size": 4, "num_hidden_layers": 1}))
    save_file(weights, one / "model.safetensors")
    save_file({"a": weights["a"]}, sharded / "x.safetensors")
    save_file({"b": weights["b"]}, sharded / "y.safetensors")
    (sharded / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {}, "weight_map": {"a": "x.safetensors", "b": "y.safetensors"}}))
    assert model_info(one)["num_params"] == model_info(sharded)["num_params"] == 17
    assert model_info(sharded)["num_hidden_layers"] == 1
