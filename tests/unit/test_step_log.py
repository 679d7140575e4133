import json
import sys
from pathlib import Path
from types import SimpleNamespace

from vllm_seed.step_log import FLUSH_EVERY, StepLog

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from step_compare import pooled_steps  # noqa: E402
from step_compare import summarise as compare  # noqa: E402
from step_log_report import bench_runs, split_runs, summarise  # noqa: E402


def _step(scheduled: dict, spec: dict, sampled: dict):
    out = SimpleNamespace(num_scheduled_tokens=scheduled, scheduled_spec_decode_tokens=spec,
                          total_num_scheduled_tokens=sum(scheduled.values()))
    ids = list(sampled)
    runner_out = SimpleNamespace(req_id_to_index={r: i for i, r in enumerate(ids)},
                                 sampled_token_ids=[sampled[r] for r in ids])
    return out, runner_out


def test_off_without_a_directory(monkeypatch):
    monkeypatch.delenv("SEED_STEP_LOG", raising=False)
    log = StepLog({"seed_config": {}})
    log.record(*_step({"a": 1}, {}, {"a": [5]}), {"a"}, start=0.0, end=1.0)
    assert log.path is None and log.lines == []


def test_lines_count_prefill_drafts_and_emitted_tokens(tmp_path):
    log = StepLog({"seed_config": {"num_drafters": 1}}, str(tmp_path))
    # "a" verifies a 3-token draft (2 accepted + bonus), "b" decodes plainly, "c" prefills 40 tokens.
    log.record(*_step({"a": 4, "b": 1, "c": 40}, {"a": [7, 8, 9]}, {"a": [7, 8, 3], "b": [4], "c": [2]}),
               {"a", "b"}, start=1.0, end=1.25, wall=0.3, forward=0.2, blocked=0.01, drafting=True,
               shut=False, window=False)
    log.flush()
    header, line = [json.loads(s) for s in Path(log.path).read_text().splitlines()]
    assert header == {"header": {"seed_config": {"num_drafters": 1}}}
    assert {k: line[k] for k in ("decoding", "reqs", "tokens", "prefill", "spec", "drafts", "emitted")} == {
        "decoding": 2, "reqs": 3, "tokens": 45, "prefill": 40, "spec": 3, "drafts": 1, "emitted": 5}
    assert log.lines == []


def test_flushes_every_so_many_steps(tmp_path):
    log = StepLog({}, str(tmp_path))
    for i in range(FLUSH_EVERY - 1):  # with the header, FLUSH_EVERY lines
        log.record(*_step({"a": 1}, {}, {"a": [1]}), {"a"}, start=float(i), end=i + 0.5)
    assert len(Path(log.path).read_text().splitlines()) == FLUSH_EVERY
    assert log.lines == []


def _line(start, end, prefill=0, spec=0, emitted=1, forward=0.1, blocked=0.0):
    return {"start": start, "end": end, "prefill": prefill, "spec": spec, "emitted": emitted, "forward": forward,
            "blocked": blocked, "tokens": prefill + spec + 1, "decoding": 1, "drafting": False, "shut": False}


def test_report_splits_runs_at_idle_gaps_and_sums_by_kind():
    steps = [_line(0.0, 0.2, prefill=30), _line(0.2, 0.3), _line(0.5, 0.6, spec=3, emitted=3, blocked=0.05),
             _line(5.0, 5.1)]
    steps[1]["held"] = {"first": 2, "due_late": 1}
    steps[2]["held"] = {"first": 1}  # steps[0], as in logs before ``held``: none
    runs = split_runs(steps, gap_s=1.0)
    assert [len(r) for r in runs] == [3, 1]
    r = summarise(runs[0])
    assert r["span_s"] == 0.6 and r["steps"] == 3 and r["emitted"] == 5
    assert abs(r["idle_s"] - 0.2) < 1e-9  # 0.3 -> 0.5
    assert abs(r["blocked_s"] - 0.05) < 1e-9
    assert abs(r["scheduler_s"] - (0.1 + 0.0 + 0.0 - 0.05 + 0.0)) < 1e-9  # wall - forward - blocked
    assert [r[k]["steps"] for k in ("prefill", "plain", "verify")] == [1, 1, 1]
    assert r["verify"]["emitted"] == 3 and r["prefill"]["tokens"] == 31
    assert r["held"] == {"due_late": 1, "first": 3}


def test_report_takes_each_repetition_s_steps_from_its_window():
    seed_log = [_line(1.0, 1.1, prefill=30), _line(1.1, 1.2), _line(9.0, 9.1)]  # the last: a probe after
    plain_log = [_line(3.0, 3.1, prefill=30), _line(3.2, 3.3)]
    bench = {"rows": [{"config": "seed", "temperature": 0.0, "mode": "throughput",
                       "reps": [{"rep": 0, "tokens_per_s": 50.0, "monotonic_s": [0.9, 1.5]}]},
                      {"config": "plain", "temperature": 0.0, "mode": "throughput",
                       "reps": [{"rep": 0, "tokens_per_s": 40.0, "monotonic_s": [2.9, 3.5]},
                                {"rep": 1, "error": "boom"}]}]}
    runs = bench_runs([seed_log, plain_log], bench)
    assert list(runs) == ["seed T=0 throughput", "plain T=0 throughput"]
    (seed,), (plain,) = runs.values()
    assert seed["steps"] == 2 and seed["tokens_per_s"] == 50.0 and abs(seed["span_s"] - 0.6) < 1e-9
    assert abs(plain["idle_s"] - 0.4) < 1e-9  # 0.6 s window, 0.2 s of steps


def test_compare_cuts_each_config_s_steps_by_load_and_kind():
    def line(start, decoding, wall, forward, spec=0, drafting=False, prefill=0, blocked=0.0, emitted=None):
        return {**_line(start, start + 0.1, prefill=prefill, spec=spec, forward=forward, blocked=blocked,
                        emitted=decoding if emitted is None else emitted),
                "decoding": decoding, "wall": wall, "drafting": drafting}

    log = [line(0.0, 0, None, 0.5, prefill=40, emitted=2),  # after idle: no wall time
           line(1.0, 24, 0.102, 0.100), line(1.2, 24, 0.104, 0.100),
           line(1.4, 20, 0.105, 0.100, drafting=True),
           line(1.6, 24, 0.120, 0.110, spec=6, drafting=True, blocked=0.004, emitted=30),
           line(1.8, 8, 0.061, 0.060),
           line(5.0, 24, 0.1, 0.1)]  # outside the window
    bench = {"rows": [{"config": "seed", "temperature": 1.0, "mode": "throughput",
                       "reps": [{"rep": 0, "monotonic_s": [0.0, 2.0]}, {"rep": 1, "error": "boom"}]}]}
    (name, steps), = pooled_steps([log], bench).items()
    assert name == "seed T=1 throughput" and len(steps) == 6
    out = compare(steps)
    assert list(out) == ["8-15", "16-31", "all"]
    plain, in_flight, verify = (out["16-31"][k] for k in ("plain", "in flight", "verify"))
    assert plain["steps"] == 2 and abs(plain["outside_ms"] - 3.0) < 1e-9 and plain["emitted_per_step"] == 24
    assert in_flight["steps"] == 1 and abs(in_flight["outside_ms"] - 5.0) < 1e-9
    assert abs(verify["outside_ms"] - 6.0) < 1e-9 and abs(verify["blocked_ms"] - 4.0) < 1e-9
    assert abs(verify["emitted_per_s"] - 30 / 0.120) < 1e-9
    prefill = out["all"]["prefill"]
    assert prefill["steps"] == 1 and prefill["forward_ms"] == 500.0 and prefill["emitted_per_s"] == 0.0
