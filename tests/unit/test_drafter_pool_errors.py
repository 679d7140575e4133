"""Ray problems are startup errors that say what to do, never hangs."""

import socket
import sys
import time
from types import SimpleNamespace

import pytest

from vllm_seed.config import SeedConfig
from vllm_seed.drafter_pool import DrafterPool, import_ray
from vllm_seed.messages import Draft, DraftBatch


def test_missing_ray_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(RuntimeError, match=r"Ray is not importable.*pip install 'ray"):
        import_ray()


def test_an_unreachable_ray_address_fails_fast_naming_it(monkeypatch, random_llama_dir):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("RAY_ADDRESS", f"127.0.0.1:{port}")
    start = time.monotonic()
    with pytest.raises(RuntimeError, match=rf"cannot reach the Ray cluster at RAY_ADDRESS='127.0.0.1:{port}'"):
        DrafterPool(SeedConfig(draft_model=random_llama_dir, num_speculative_tokens=3), max_len=64)
    assert time.monotonic() - start < 10  # ray.init alone retries for minutes


def test_a_malformed_ray_address_is_named(monkeypatch, random_llama_dir):
    monkeypatch.setenv("RAY_ADDRESS", "no-port-here")
    with pytest.raises(RuntimeError, match="RAY_ADDRESS='no-port-here'"):
        DrafterPool(SeedConfig(draft_model=random_llama_dir, num_speculative_tokens=3), max_len=64)


def test_drafters_that_never_start_fail_the_startup_with_what_to_do(monkeypatch, random_llama_dir):
    import vllm_seed.drafter_pool as drafter_pool

    class NeverReadyDrafter:  # local: Ray ships it by value, as workers cannot import tests
        """Stands for a drafter Ray keeps restarting (killed for memory): it never answers."""

        def __init__(self, *args):
            pass

        def vocab_size(self):
            time.sleep(600)

    monkeypatch.setattr(drafter_pool, "START_TIMEOUT_S", 3.0)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    start = time.monotonic()
    with pytest.raises(RuntimeError, match=r"did not start within 3 s.*--kv-cache-memory-bytes"):
        DrafterPool(SeedConfig(draft_model=random_llama_dir, num_speculative_tokens=3), max_len=64,
                    drafter_cls=NeverReadyDrafter)
    assert time.monotonic() - start < 60
    assert not import_ray().is_initialized()  # the pool took its cluster down with it


def test_time_to_land_is_when_the_last_in_flight_job_should_finish():
    pool = DrafterPool.__new__(DrafterPool)  # no Ray: only the bookkeeping
    now = time.monotonic()
    pool.in_flight = {"ref0": (0, now - 0.010, ["a"]), "ref1": (1, now - 0.001, ["b"])}
    pool.call_s = {0: 0.020, 1: 0.015}
    assert pool.time_to_land() == pytest.approx(0.014, abs=0.004)
    pool.call_s = {0: 0.020}  # drafter 1 never measured: unknown
    assert pool.time_to_land() is None
    pool.in_flight = {"ref0": (0, now - 0.5, ["a"])}  # overdue
    assert pool.time_to_land() == 0


def test_time_left_is_when_a_drafters_jobs_should_finish():
    pool = DrafterPool.__new__(DrafterPool)  # no Ray: only the bookkeeping
    now = time.monotonic()
    pool.in_flight = {"ref0": (0, now - 0.010, ["a"]), "ref1": (0, now - 0.001, ["b"])}
    pool.call_s = {0: 0.020, 1: 0.015}
    assert pool.time_left(0) == pytest.approx(0.019, abs=0.004)  # its later job
    assert pool.time_left(1) == 0  # nothing in flight
    assert pool.call_time(1) == 0.015
    assert pool.time_left(2) is None and pool.call_time(2) is None  # never measured


def test_a_warm_job_s_prompt_prefill_is_not_taken_for_a_round_s_time():
    """A warm job (no draft: the drafter prefills a prompt) lands as a batch
    without drafts; its time would tell the scheduler that rounds take that
    long, and late drafts would be held back for it."""
    pool = DrafterPool.__new__(DrafterPool)  # no Ray: only the bookkeeping
    now = time.monotonic()
    batches = {"warm": DraftBatch(0, [], now, 0.400), "round": DraftBatch(0, [Draft("a", 9, [5], None)], now, 0.010)}
    pool.ray = SimpleNamespace(wait=lambda refs, num_returns, timeout: (list(refs), []), get=batches.get)
    pool.retry_at, pool.pings, pool.backoff, pool.call_s = {}, {}, {}, {}
    pool.in_flight = {"warm": (0, now - 0.400, ["a"])}
    landed, failed = pool.poll(0)
    assert landed == [batches["warm"]] and failed == [] and pool.call_time(0) is None
    pool.in_flight = {"round": (0, now - 0.020, ["a"])}
    pool.poll(0)
    assert pool.call_time(0) == pytest.approx(0.020, abs=0.002)
