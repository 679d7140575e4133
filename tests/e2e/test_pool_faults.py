"""Drafter faults with fake drafters in real Ray actors: a drafter that raises,
dies or hangs fails only its job (its branches decode plainly), is restarted,
and comes back after a backoff that doubles while it keeps failing. The drafters
of a cluster the pool starts run at normal priority, not at Ray's nice 15."""

import os
import time

import pytest

from tests.conftest import DRAFT_DIR
from vllm_seed.config import SeedConfig
from vllm_seed.drafter_pool import MIN_BACKOFF_S, DrafterPool
from vllm_seed.messages import Draft, DraftBatch, DraftJob


class FakeDrafter:
    """Behaves by the request id it is given: raise-*, die-*, hang-*, else drafts 1s."""

    def __init__(self, model_dir, max_len, index=0, num_threads=1, cpus=(), head="float32"):
        self.index = index

    def ping(self):
        return self.index

    def niceness(self):
        return os.nice(0)

    def vocab_size(self):
        return 64

    def free(self, req_ids):
        pass

    def draft(self, jobs):
        start = time.monotonic()
        for job in jobs:
            if job.req_id.startswith("raise"):
                raise RuntimeError("drafter bug")
            if job.req_id.startswith("die"):
                os._exit(1)
            if job.req_id.startswith("hang"):
                time.sleep(3600)
        drafts = [Draft(j.req_id, len(j.token_ids), [1] * j.num_draft, None) for j in jobs]
        return DraftBatch(self.index, drafts, time.monotonic(), time.monotonic() - start)


@pytest.fixture(scope="module")
def pool():
    config = SeedConfig(draft_model=str(DRAFT_DIR), num_speculative_tokens=2, num_drafters=2)
    pool = DrafterPool(config, max_len=64, drafter_cls=FakeDrafter)
    yield pool
    pool.shutdown()


def job(req_id):
    return DraftJob(req_id, [1, 2, 3], 2, 0.0)


def poll_until(pool, done, timeout_s=60.0, job_timeout_s=float("inf")):
    batches, failed = [], []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        b, f = pool.poll(0.1, job_timeout_s)
        batches += b
        failed += f
        if done(batches, failed):
            return batches, failed
    raise AssertionError(f"timed out: {batches} {failed} down={pool.down}")


def back_in_service(pool, drafter):
    poll_until(pool, lambda b, f: drafter not in pool.down)
    pool.submit(drafter, [job(f"ok-after-{drafter}")])
    batches, _ = poll_until(pool, lambda b, f: b)
    assert batches[0].drafts[0].token_ids == [1, 1]


@pytest.mark.parametrize("fault", ["raise", "die", "hang"])
def test_a_faulty_drafter_fails_its_job_only_and_comes_back(pool, fault):
    restarts = pool.restarts
    pool.submit(0, [job(f"{fault}-a"), job(f"{fault}-b")])
    pool.submit(1, [job("healthy")])
    batches, failed = poll_until(pool, lambda b, f: b and f, job_timeout_s=2.0)
    assert [d.req_id for d in batches[0].drafts] == ["healthy"]  # the other drafter is unaffected
    assert failed == [(0, [f"{fault}-a", f"{fault}-b"])]
    assert pool.down == {0}
    poll_until(pool, lambda b, f: 0 not in pool.down)
    # One failure, one doubling: pings wait out Ray's restart, they do not fail.
    assert pool.backoff[0] == 2 * MIN_BACKOFF_S
    back_in_service(pool, 0)
    assert pool.restarts == restarts + 1
    assert 0 not in pool.backoff  # a good job resets the backoff


def test_backoff_doubles_while_a_drafter_keeps_failing(pool):
    waits = []
    for i in range(3):
        pool.submit(1, [job(f"raise-{i}")])
        poll_until(pool, lambda b, f: f)
        waits.append(pool.retry_at[1] - time.monotonic())
        poll_until(pool, lambda b, f: 1 not in pool.down)
    assert waits[0] <= MIN_BACKOFF_S
    assert MIN_BACKOFF_S < waits[1] <= 2 * MIN_BACKOFF_S < waits[2] <= 4 * MIN_BACKOFF_S
    back_in_service(pool, 1)


def test_drafters_run_at_normal_priority(pool):
    # Ray's default, nice 15, starves a drafter of the core it shares with the
    # API server, and slows its restart by a model load at that priority.
    assert pool.ray.get([a.niceness.remote() for a in pool.actors]) == [0, 0]
