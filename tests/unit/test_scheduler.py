"""SeedScheduler glue on a real vLLM Scheduler, with a fake drafter pool."""

import numpy as np
import pytest
import torch

from vllm_seed.messages import Draft, DraftBatch

BLOCK = 16


class FakePool:
    def __init__(self):
        self.jobs, self.ready, self.failed, self.freed, self.timeouts = [], [], [], [], []
        self.later = []  # batches that land while the scheduler blocks
        self.land = None  # time_to_land(), and every drafter's time_left()
        self.call = None  # every drafter's call_time()
        self.busy = False  # drafting()
        self.down = set()
        self.restarts = 0

    def submit(self, drafter, jobs):
        self.jobs.append((drafter, jobs))

    def poll(self, timeout_s, job_timeout_s=None):
        self.timeouts.append(timeout_s)
        if timeout_s > 0:
            self.ready, self.later = self.ready + self.later, []
        ready, failed = self.ready, self.failed
        self.ready, self.failed = [], []
        return sorted(ready, key=lambda b: b.finished_at), failed

    def time_to_land(self):
        return self.land

    def time_left(self, drafter):
        return self.land

    def call_time(self, drafter):
        return self.call

    def drafting(self):
        return self.busy

    def free(self, drafter, req_ids):
        self.freed.extend(req_ids)

    def shutdown(self):
        pass


def make_scheduler(model_dir, max_num_seqs=8, budget=256, **seed_config):
    """A SeedScheduler on a fake drafter pool. Warm drafts are off unless
    asked for: the round tests count the draft jobs each step sends."""
    import vllm_seed
    from vllm.config import CacheConfig, ModelConfig, ParallelConfig, SchedulerConfig, SpeculativeConfig, VllmConfig
    from vllm.v1.kv_cache_interface import FullAttentionSpec, KVCacheConfig, KVCacheGroupSpec
    from vllm.v1.structured_output import StructuredOutputManager

    from vllm_seed.scheduler import SeedScheduler

    kw = vllm_seed.seed_llm_kwargs(model_dir, 3, num_drafters=2, **{"warm_drafts": False, **seed_config})
    model = ModelConfig(model=model_dir, skip_tokenizer_init=True, dtype="float32", max_model_len=256)
    config = VllmConfig(
        model_config=model,
        scheduler_config=SchedulerConfig(
            max_num_seqs=max_num_seqs, max_num_batched_tokens=budget, max_model_len=256,
            is_encoder_decoder=False,
        ),
        cache_config=CacheConfig(block_size=BLOCK, cache_dtype="auto"),
        speculative_config=SpeculativeConfig(
            **kw["speculative_config"], target_model_config=model, target_parallel_config=ParallelConfig()
        ),
        additional_config=kw["additional_config"],
    )
    config.cache_config.num_gpu_blocks = 256
    spec = FullAttentionSpec(block_size=BLOCK, num_kv_heads=1, head_size=16, dtype=torch.float32)
    kv = KVCacheConfig(num_blocks=256, kv_cache_tensors=[], kv_cache_groups=[KVCacheGroupSpec(["l"], spec)])

    class TestScheduler(SeedScheduler):
        def _make_pool(self, vllm_config):
            return FakePool()

    return TestScheduler(config, kv, structured_output_manager=StructuredOutputManager(config), block_size=BLOCK, log_stats=True)


def add(sched, rid, group=None, temperature=0.0, prompt=(1, 2, 3), **sampling):
    from vllm.sampling_params import SamplingParams
    from vllm.v1.request import Request

    params = SamplingParams(max_tokens=50, temperature=temperature,
                            extra_args={"seed_group": group} if group else None, **sampling)
    sched.add_request(Request(rid, list(prompt), params, None))


def step(sched, sampled: dict):
    from vllm.v1.outputs import ModelRunnerOutput

    out = sched.schedule()
    ids = list(out.num_scheduled_tokens)
    result = ModelRunnerOutput(req_ids=ids, req_id_to_index={r: i for i, r in enumerate(ids)},
                               sampled_token_ids=[sampled.get(r, [7]) for r in ids])
    sched.update_from_output(out, result)
    return out


def finish(pool, drafter, req_ids, at, probs=None, tokens=(11, 12, 13)):
    """The drafts of the last jobs of ``req_ids``: ``tokens``."""
    drafts = {}
    for _, jobs in pool.jobs:
        for job in jobs:
            if job.req_id in req_ids:
                drafts[job.req_id] = Draft(job.req_id, len(job.token_ids), list(tokens), probs)
    pool.ready.append(DraftBatch(drafter, list(drafts.values()), at, 0.001))


@pytest.fixture
def sched(random_llama_dir):
    return make_scheduler(random_llama_dir)


@pytest.fixture
def held_sched(random_llama_dir):
    """Late drafts hold their branches back (late_drafts "hold")."""
    return make_scheduler(random_llama_dir, late_drafts="hold")


def test_round_holds_back_verifies_fcfs_and_rolls_back(held_sched):
    sched = held_sched
    pool = sched.pool
    for rid, group in (("a", "g1"), ("b", "g1"), ("c", "g2")):
        add(sched, rid, group)
    out = step(sched, {})  # prefill: every branch samples one token
    assert out.num_scheduled_tokens == {"a": 3, "b": 3, "c": 3}
    # Verified-or-prefilled branches go straight to their drafters, siblings together.
    assert [(d, [j.req_id for j in jobs]) for d, jobs in pool.jobs] == [(0, ["a", "b"]), (1, ["c"])]
    assert pool.jobs[0][1][0].token_ids == [1, 2, 3, 7]

    out = step(sched, {})  # nothing drafted yet: all held, and it blocked instead of spinning
    assert out.num_scheduled_tokens == {}
    assert pool.timeouts[-1] == pytest.approx(0.05)
    assert sched.rounds.stats.held_back_steps == 3

    finish(pool, 1, ["c"], at=2.0)
    finish(pool, 0, ["a", "b"], at=1.0)  # drafter 0 finished first: verified first
    out = step(sched, {"a": [11, 99], "b": [11, 12, 13, 14], "c": [98]})
    assert list(out.scheduled_spec_decode_tokens) == ["a", "b", "c"]
    assert out.num_scheduled_tokens == {"a": 4, "b": 4, "c": 4}
    # Rejected draft tokens are rolled back: computed = context - 1 again.
    for rid, n_out in (("a", 3), ("b", 5), ("c", 2)):
        req = sched.requests[rid]
        assert req.num_tokens == 3 + n_out
        assert req.num_computed_tokens == req.num_tokens - 1
    assert list(sched.requests["b"].output_token_ids) == [7, 11, 12, 13, 14]
    # And every branch was re-drafted with its new context at once.
    assert [j.token_ids for j in pool.jobs[-2][1]] == [[1, 2, 3, 7, 11, 99], [1, 2, 3, 7, 11, 12, 13, 14]]


def test_engine_phases_partition_the_wall_time_of_the_steps(held_sched):
    import time

    sched = held_sched
    from vllm_seed.metrics import PHASES

    for rid in ("a", "b"):
        add(sched, rid, "g")
    started = time.monotonic()
    step(sched, {})  # prefill: a plain step
    step(sched, {})  # every branch held back
    finish(sched.pool, 0, ["a", "b"], at=time.monotonic())
    step(sched, {"a": [11, 12], "b": [98]})  # verifies both drafts
    wall = time.monotonic() - started
    stats = sched.rounds.stats
    assert stats.engine_steps == 3
    assert set(stats.phase_s) <= set(PHASES)
    assert {"target_plain", "target_verify", "seed_schedule", "vllm_schedule", "vllm_update",
            "seed_update", "engine_loop"} == set(stats.phase_s)
    assert min(stats.phase_s.values()) >= 0
    # Consecutive, disjoint segments from the first schedule() to the last update: no gap.
    covered = sum(stats.phase_s.values()) + stats.blocked_wait_s
    assert wall - 0.005 < covered <= wall


def two_drafting_branches(sched, land, paused=()):
    """a and b (and the ``paused`` ones, plainly) decode after their prefill;
    a's draft is ready, b's lands in ``land`` s; a step's fixed cost is 45 ms."""
    sched.adaptive.should_draft = lambda rid, num_decoding: rid not in paused
    for tokens in (2, 8, 2, 8, 2, 8):
        sched.adaptive.step_done(tokens, 0.045 + 0.003 * tokens)
    sched.pool.call = land  # the drafters' recent call time
    for rid in ("a", "b", *paused):
        add(sched, rid)
    step(sched, {})
    finish(sched.pool, 0, ["a"], at=1.0)
    finish(sched.pool, 1, ["b"], at=1.01)
    sched.pool.later.append(sched.pool.ready.pop())
    sched.pool.land = land


def test_a_ready_draft_waits_for_drafts_that_land_within_a_step_fixed_cost(sched):
    two_drafting_branches(sched, land=0.02)
    out = step(sched, {})
    assert list(out.scheduled_spec_decode_tokens) == ["a", "b"]  # one step, not two
    assert sched.pool.timeouts[-1] == pytest.approx(0.045, abs=0.01)  # it blocked, 45 ms at most


@pytest.mark.parametrize("land, paused", [(0.06, ()), (0.02, ("c",))])
@pytest.mark.parametrize("late_drafts", ["decode", "hold"])
def test_no_wait_for_late_drafts_nor_with_plain_decodes_to_run(random_llama_dir, land, paused, late_drafts):
    sched = make_scheduler(random_llama_dir, late_drafts=late_drafts)
    two_drafting_branches(sched, land, paused)
    out = step(sched, {})
    assert list(out.scheduled_spec_decode_tokens) == ["a"]
    # b decodes meanwhile if its draft lands within a plain step of the decoding branches (51-54 ms)
    # and, as the step was known to run (c decodes plainly), it was drafted a token longer for it.
    late = {"b": 1} if late_drafts == "decode" and land < 0.05 and paused else {}
    assert out.num_scheduled_tokens == {"a": 4, **late, **{rid: 1 for rid in paused}}
    assert max(sched.pool.timeouts) == 0
    stats = sched.rounds.stats
    assert (stats.late_steps, stats.held_back_steps) == ((1, 0) if late else (0, 1))


def measured(sched, call_s, left_s=None):
    """A target step costs 45 ms + 3 ms per token; a drafter call ``call_s``, due in ``left_s``."""
    for tokens in (2, 8, 2, 8, 2, 8):
        sched.adaptive.step_done(tokens, 0.045 + 0.003 * tokens)
    sched.pool.call, sched.pool.land = call_s, left_s


def late_branch(sched, temperature=0.0):
    """b drafts while a, paused, decodes plainly: the steps run without waiting
    for b's draft, which lands within a step."""
    measured(sched, call_s=0.02, left_s=0.01)
    sched.adaptive.should_draft = lambda rid, num_decoding: rid != "a"
    add(sched, "a", temperature=temperature)
    add(sched, "b", temperature=temperature)
    step(sched, {})  # prefill: both sample 7
    return sched.pool.jobs[-1][1][0]


def test_a_late_branch_decodes_meanwhile_then_verifies_the_rest_of_its_draft(sched):
    job = late_branch(sched, temperature=1.0)
    assert (job.req_id, job.num_draft) == ("b", 4)  # 3, and 1 for the token decoded meanwhile
    out = step(sched, {"b": [8]})  # b's draft is not ready: b decodes meanwhile
    assert out.num_scheduled_tokens == {"a": 1, "b": 1}
    q = np.arange(4, dtype=np.float32)[:, None] * np.ones((4, 8), dtype=np.float32)  # row i is all i
    finish(sched.pool, 0, ["b"], at=1.0, probs=q, tokens=(8, 12, 13, 14))  # begins with that token
    out = step(sched, {"b": [12, 13, 99]})
    assert out.scheduled_spec_decode_tokens == {"b": [12, 13, 14]}
    assert out.seed_draft_probs["b"][:, 0].tolist() == [1, 2, 3]  # the q of those three
    assert list(sched.requests["b"].output_token_ids) == [7, 8, 12, 13, 99]
    stats = sched.rounds.stats
    assert (stats.late_steps, stats.late_drafts_verified, stats.late_drafts_dropped) == (1, 1, 0)
    assert stats.held_back_steps == 0
    b = sched.adaptive.branches["b"]  # the agreed token, as if accepted, and the verdict on the rest
    assert (b.accepted, b.rejected) == (1 + 2, 1)
    # Verified: b drafts again at once, from its new context.
    assert sched.pool.jobs[-1][1][0].token_ids == [1, 2, 3, 7, 8, 12, 13, 99]


def test_a_branch_decodes_meanwhile_no_more_tokens_than_its_draft_was_made_longer_for(sched):
    late_branch(sched)
    assert step(sched, {"b": [8]}).num_scheduled_tokens == {"a": 1, "b": 1}
    out = step(sched, {})  # its draft is still not in: another token would cut it short
    assert out.num_scheduled_tokens == {"a": 1}
    assert (sched.rounds.stats.late_steps, sched.rounds.stats.held_back_steps) == (1, 1)


def test_a_late_draft_that_does_not_begin_with_what_was_decoded_meanwhile_is_dropped(sched):
    late_branch(sched)
    step(sched, {"b": [8]})
    finish(sched.pool, 0, ["b"], at=1.0, tokens=(9, 12, 13, 14))
    out = step(sched, {})
    assert out.scheduled_spec_decode_tokens == {}
    assert out.num_scheduled_tokens == {"a": 1, "b": 1}  # b decodes meanwhile again
    assert sched.pool.jobs[-1][1][0].token_ids == [1, 2, 3, 7, 8]  # drafting from where it is
    stats = sched.rounds.stats
    assert (stats.late_steps, stats.late_drafts_verified, stats.late_drafts_dropped) == (2, 0, 1)
    b = sched.adaptive.branches["b"]
    assert (b.accepted, b.rejected) == (0, 1)  # it did not agree: a rejection


@pytest.mark.parametrize("paused, late_drafts, call_s, num_draft", [
    ((), "decode", 0.02, 3),  # every branch drafts: the next step waits for the drafts
    (("a",), "decode", 0.02, 4),  # a decodes plainly: the next step runs, b decodes meanwhile
    (("a",), "decode", 0.06, 3),  # ... but b's draft would land after it: b is held back
    (("a",), "decode", None, 3),  # ... or the drafter is not measured yet
    (("a",), "hold", 0.02, 3),  # b is held back
])
def test_drafts_are_one_token_longer_when_the_branch_will_decode_meanwhile(
        random_llama_dir, paused, late_drafts, call_s, num_draft):
    sched = make_scheduler(random_llama_dir, late_drafts=late_drafts)
    measured(sched, call_s)  # a plain step of 2 branches: 51 ms
    sched.adaptive.should_draft = lambda rid, num_decoding: rid not in paused
    add(sched, "a")
    add(sched, "b")
    step(sched, {})
    assert {job.req_id: job.num_draft for _, jobs in sched.pool.jobs for job in jobs} == {
        rid: num_draft for rid in ("a", "b") if rid not in paused}


def test_held_branches_count_against_max_num_seqs(random_llama_dir):
    sched = make_scheduler(random_llama_dir, max_num_seqs=3, late_drafts="hold")
    for rid in ("a", "b"):
        add(sched, rid)
    step(sched, {})
    for rid in ("c", "d", "e"):
        add(sched, rid)
    out = step(sched, {})  # a, b held; only one new request may be admitted
    assert list(out.num_scheduled_tokens) == ["c"]
    assert len(sched.running) == 3


def test_a_prompt_cached_but_for_its_last_token_gets_no_placeholder_draft(sched):
    # vLLM pads such a request to 1 + k tokens with -1 drafts; SEED verifies its own drafts only
    # (a placeholder tree draft has no q: at T > 0 it failed the engine step).
    from vllm.sampling_params import SamplingParams
    from vllm.utils.hashing import sha256
    from vllm.v1.core.kv_cache_utils import get_request_block_hasher, init_none_hash
    from vllm.v1.request import Request

    init_none_hash(sha256)
    hasher = get_request_block_hasher(BLOCK, sha256)
    prompt = list(range(1, BLOCK + 2))  # one full block, cached once "a" has run, + 1 token
    for rid in ("a", "b"):
        sched.add_request(Request(rid, prompt, SamplingParams(max_tokens=50, temperature=1.0), None,
                                  block_hasher=hasher))
        out = step(sched, {})
    assert out.num_scheduled_tokens == {"b": 1}  # the cached block is not recomputed
    assert out.scheduled_spec_decode_tokens == {}


def test_token_budget_takes_the_queue_head_and_requeues_the_rest(random_llama_dir):
    sched = make_scheduler(random_llama_dir, budget=24, late_drafts="hold")
    for rid in ("a", "b"):
        add(sched, rid, prompt=tuple(range(1, 11)))
    step(sched, {})
    step(sched, {})
    finish(sched.pool, 0, ["b"], at=1.0)
    finish(sched.pool, 1, ["a"], at=2.0)
    sched.max_num_scheduled_tokens = 4  # room for one draft (1 + 3 tokens) only
    out = sched.schedule()
    assert out.num_scheduled_tokens == {"b": 4}
    assert list(sched.rounds.verify_queue) == ["a"]
    assert sched.requests["a"].spec_token_ids == []


def test_stochastic_drafts_ship_q_and_failed_drafts_decode_plainly(sched):
    add(sched, "s", temperature=1.0)
    add(sched, "f", temperature=1.0)
    step(sched, {})
    q = np.full((3, 64), 1 / 64, dtype=np.float32)
    finish(sched.pool, 0, ["s"], at=1.0, probs=q)
    sched.pool.failed.append((1, ["f"]))
    out = sched.schedule()
    assert out.scheduled_spec_decode_tokens == {"s": [11, 12, 13]}
    assert out.num_scheduled_tokens == {"s": 4, "f": 1}  # f: one plain token
    assert out.seed_draft_probs["s"].shape == (3, 64)
    assert sched.rounds.stats.plain_fallbacks == 1


def test_finished_branches_free_their_drafter_slots(sched):
    from vllm.v1.request import RequestStatus

    add(sched, "a")
    step(sched, {})
    sched.finish_requests("a", RequestStatus.FINISHED_ABORTED)
    sched.schedule()
    assert sched.pool.freed == ["a"]
    assert "a" not in sched.rounds.branches


def test_verifications_feed_adaptive_speculation(sched):
    add(sched, "a")
    add(sched, "b")
    step(sched, {})
    finish(sched.pool, 0, ["a", "b"], at=1.0)
    step(sched, {"a": [11, 99], "b": [11, 12, 13, 14]})
    a, b = sched.adaptive.branches["a"], sched.adaptive.branches["b"]
    assert (a.accepted, a.rejected, b.accepted, b.rejected) == (1, 1, 3, 0)
    assert sched.adaptive.steps.n == 1  # the verify step: prefills lie off the decode cost curve


def test_each_draft_job_has_the_length_adaptive_speculation_chose(sched):
    lengths = {"a": 1, "b": 3}
    sched.adaptive.draft_length = lambda rid, num_decoding: lengths[rid]
    add(sched, "a", temperature=1.0)
    add(sched, "b", temperature=1.0)
    step(sched, {})
    jobs = {job.req_id: job for _, batch in sched.pool.jobs for job in batch}
    assert {rid: job.num_draft for rid, job in jobs.items()} == lengths
    q = np.full((1, 8), 1 / 8, dtype=np.float32)
    drafts = [Draft("a", len(jobs["a"].token_ids), [11], q),
              Draft("b", len(jobs["b"].token_ids), [11, 12, 13], np.repeat(q, 3, axis=0))]
    sched.pool.ready.append(DraftBatch(0, drafts, 1.0, 0.009))
    out = step(sched, {"a": [11, 5], "b": [11, 12, 9]})
    assert out.scheduled_spec_decode_tokens == {"a": [11], "b": [11, 12, 13]}
    assert {rid: p.shape for rid, p in out.seed_draft_probs.items()} == {"a": (1, 8), "b": (3, 8)}
    assert sched.adaptive.draft_s == pytest.approx(0.003)  # 9 ms over its 3 forwards
    a, b = sched.adaptive.branches["a"], sched.adaptive.branches["b"]
    assert (a.accepted, a.rejected, b.accepted, b.rejected) == (1, 0, 2, 1)


def test_drafts_are_cut_by_confidence_before_verification_and_teach_it(sched):
    """a's draft is sure of its first two tokens only: the third is cut; b's
    is sure of nothing: b decodes plainly and drafts again, its round counted
    as one whose first token was rejected. The verdict on a's two tokens (one
    accepted) is learned by confidence."""
    measured(sched, call_s=0.02)  # 45 ms + 3 ms a token: at N=2 a token must be ~11% sure
    add(sched, "a", temperature=1.0)
    add(sched, "b", temperature=1.0)
    step(sched, {})
    jobs = {job.req_id: job for _, batch in sched.pool.jobs for job in batch}
    q = np.arange(3, dtype=np.float32)[:, None] * np.ones((3, 8), dtype=np.float32)  # row i is all i
    drafts = [Draft("a", len(jobs["a"].token_ids), [11, 12, 13], q, [0.95, 0.85, 0.05]),
              Draft("b", len(jobs["b"].token_ids), [11, 12, 13], q, [0.05, 0.95, 0.95])]
    sched.pool.ready.append(DraftBatch(0, drafts, 1.0, 0.009))
    out = step(sched, {"a": [11, 5], "b": [6]})
    assert out.scheduled_spec_decode_tokens == {"a": [11, 12]}
    assert out.num_scheduled_tokens == {"a": 3, "b": 1}
    assert out.seed_draft_probs["a"][:, 0].tolist() == [0, 1]  # the q rows of the tokens kept
    stats = sched.rounds.stats
    assert (stats.trimmed_tokens, stats.trimmed_drafts, stats.drafts_verified) == (1 + 3, 1, 1)
    assert list(sched.requests["b"].output_token_ids) == [7, 6]
    assert sched.pool.jobs[-1][1][-1].token_ids == [1, 2, 3, 7, 6]  # b drafts again
    counts = sched.adaptive.confidence.counts
    assert counts[(1.0, 9)] == [1, 1] and counts[(1.0, 8)] == [1, 0] and (1.0, 0) not in counts
    a, b = sched.adaptive.branches["a"], sched.adaptive.branches["b"]
    assert (a.accepted, a.rejected) == (1, 1)
    assert (b.accepted, b.rejected) == (0, 1)  # b's cut draft: a round that yielded its plain token


def test_with_trim_off_drafts_are_verified_whole(random_llama_dir):
    sched = make_scheduler(random_llama_dir, trim=False)
    measured(sched, call_s=0.02)
    add(sched, "a")
    step(sched, {})
    job = sched.pool.jobs[-1][1][0]
    sched.pool.ready.append(DraftBatch(0, [Draft("a", len(job.token_ids), [11, 12, 13], None, [0.01] * 3)], 1.0, 0.009))
    out = step(sched, {"a": [5]})
    assert out.scheduled_spec_decode_tokens == {"a": [11, 12, 13]}


@pytest.mark.parametrize("busy", [False, True])
def test_plain_steps_measure_plain_decoding_only_while_nothing_drafts(sched, busy):
    sched.adaptive.should_draft = lambda rid, num_decoding: False
    sched.pool.busy = busy
    add(sched, "a")
    add(sched, "b")
    step(sched, {})  # prefill: not a decode step
    for _ in range(4):
        step(sched, {})  # a and b decode plainly
    assert sched.adaptive.plain.num_samples == (0 if busy else 4)
    if not busy:
        assert 0 < sched.adaptive.plain.predict(2) < 1.0


def test_a_step_at_a_temperature_not_measured_opens_a_plain_window_at_once(sched):
    """The step's temperature is set before its load is judged: greedy plain
    steps of 2 branches say nothing of a step that samples (plain_cost.py)."""
    sched.adaptive.should_draft = lambda rid, num_decoding: False
    add(sched, "a")
    add(sched, "b")
    for _ in range(5):
        step(sched, {})  # a and b: prefill, then 4 greedy plain steps, measured
    assert sched.adaptive.plain.ready and not sched.adaptive.window
    add(sched, "c", temperature=1.0)
    step(sched, {})  # c's prefill; a and b decode greedily, a load measured
    assert not sched.adaptive.window
    step(sched, {})  # a, b and c decode: the step samples at T=1, not measured at 2-3 branches
    assert sched.adaptive.temperature == 1.0 and sched.adaptive.window


def test_plain_steps_are_measured_at_their_step_s_temperature(sched):
    """A plain step is measured at its step's temperature: a sampled step's
    cost is not a greedy one's (plain_cost.py)."""
    sched.adaptive.should_draft = lambda rid, num_decoding: False
    add(sched, "a", temperature=1.0)
    add(sched, "b", temperature=1.0)
    step(sched, {})
    for _ in range(4):
        step(sched, {})
    assert sched.adaptive.plain.predict(2, temperature=1.0) is not None
    assert sched.adaptive.plain.predict(2, temperature=0.0) is None


def test_verify_steps_feed_the_gate_of_their_load_with_the_tokens_they_emitted(sched):
    for _ in range(4):
        sched.adaptive.plain_step(2, 1.0)  # plain decoding: 1 s per step of 2 branches
    add(sched, "a")
    add(sched, "b")
    step(sched, {})  # prefill
    sched.pool.busy = True  # drafts in flight
    finish(sched.pool, 0, ["a", "b"], at=1.0)
    step(sched, {"a": [11, 99], "b": [11, 12, 13, 14]})  # 6 tokens for 2 branches
    gate = sched.adaptive.gate(2)
    assert gate.steps == 1
    assert gate.plain_s == pytest.approx(6 * 1.0 / 2)  # plain decoding needs 3 s for them
    assert 0 < gate.spec_s < 1.0  # this step took far less


def test_a_shut_gate_counts_its_steps(sched):
    for _ in range(4):
        sched.adaptive.plain_step(2, 0.001)
    sched.adaptive.gate(2).shut = 10
    add(sched, "a")
    add(sched, "b")
    step(sched, {})
    out = step(sched, {})
    assert out.num_scheduled_tokens == {"a": 1, "b": 1} and not sched.pool.jobs
    assert sched.rounds.stats.gate_shut_steps == 1  # the prefill step had no decoding branch


def test_a_paused_branch_decodes_plainly_instead_of_waiting(sched):
    sched.adaptive.should_draft = lambda rid, num_decoding: rid != "a"
    add(sched, "a")
    add(sched, "b")
    step(sched, {})
    assert [j.req_id for _, jobs in sched.pool.jobs for j in jobs] == ["b"]
    out = step(sched, {})
    assert out.num_scheduled_tokens == {"a": 1}  # b is held back for its draft
    assert sched.rounds.stats.paused_steps == 2  # after the prefill, and after this step


def test_no_branch_drafts_while_more_than_disable_by_batch_size_decode(random_llama_dir):
    from vllm.v1.request import RequestStatus

    sched = make_scheduler(random_llama_dir, disable_by_batch_size=2)
    sched.adaptive.should_draft = lambda rid, num_decoding: True
    for rid in "abc":
        add(sched, rid)
    step(sched, {})  # the prefills; then 3 decode, more than 2: no draft
    assert sched.pool.jobs == []
    out = step(sched, {})
    assert out.num_scheduled_tokens == {"a": 1, "b": 1, "c": 1} and sched.pool.jobs == []
    assert sched.rounds.stats.paused_steps == 6
    sched.finish_requests("c", RequestStatus.FINISHED_ABORTED)
    step(sched, {})  # 2 decode: within the limit, they draft
    assert sorted(j.req_id for _, jobs in sched.pool.jobs for j in jobs) == ["a", "b"]


def test_a_branch_longer_than_the_draft_context_decodes_plainly(sched):
    from vllm_seed.rounds import State

    # Room for 3 + 1 prompt/output tokens and 4 drafted (3, and 1 to decode meanwhile), not for 4 + 1.
    sched.draft_max_len = 9
    add(sched, "long", prompt=(1, 2, 3, 4))
    add(sched, "short")
    step(sched, {})
    assert [j.req_id for _, jobs in sched.pool.jobs for j in jobs] == ["short"]
    assert sched.rounds.branches["long"].state is State.OFF
    out = step(sched, {})
    assert out.num_scheduled_tokens == {"long": 1}  # short waits for its draft


def test_tree_rounds_draft_the_tree_and_verify_all_its_nodes(random_llama_dir):
    sched = make_scheduler(random_llama_dir, k_config=[2, 2, 1], replacement=True)
    pool = sched.pool
    add(sched, "a", temperature=1.0)
    step(sched, {})
    job = pool.jobs[-1][1][0]
    assert (job.num_draft, job.k_config, job.replacement) == (3, (2, 2, 1), True)
    nodes = list(range(20, 30))  # 10 nodes in BFS order
    q = np.full((10, 8), 1 / 8, dtype=np.float32)
    pool.ready.append(DraftBatch(0, [Draft("a", len(job.token_ids), nodes, q)], 1.0, 0.001))
    out = step(sched, {"a": [20, 22, 26, 5]})  # the walk accepted a path of 3, then a bonus
    assert out.scheduled_spec_decode_tokens == {"a": nodes}
    assert out.num_scheduled_tokens == {"a": 11}
    assert out.seed_draft_probs["a"].shape == (10, 8)
    req = sched.requests["a"]
    assert req.num_computed_tokens == req.num_tokens - 1  # 7 rejected node slots rolled back
    # Adaptive speculation sees a full-depth acceptance (3 of depth 3), not 3 of 10 nodes.
    assert (sched.adaptive.accepted, sched.adaptive.rejected) == (3, 0)
    assert sched.adaptive.draft_s is None  # 10 nodes are 3 forwards: no chain's draft cost


@pytest.mark.parametrize("sampling", [
    {"logprobs": 2}, {"repetition_penalty": 1.2}, {"presence_penalty": 0.5}, {"min_p": 0.1},
    {"min_tokens": 3}, {"logit_bias": {3: 1.0}}, {"allowed_token_ids": [1, 2]},
])
def test_tree_mode_decodes_plainly_what_it_cannot_verify_exactly(random_llama_dir, sampling):
    from vllm_seed.rounds import State

    sched = make_scheduler(random_llama_dir, k_config=[2, 2, 1])
    add(sched, "a", temperature=1.0, **sampling)
    add(sched, "b", temperature=1.0)
    step(sched, {})
    assert sched.rounds.branches["a"].state is State.OFF
    assert [j.req_id for _, jobs in sched.pool.jobs for j in jobs] == ["b"]


def test_each_step_sets_the_regime_temperature_its_decoding_branches_sample_at(sched):
    add(sched, "a", temperature=0.0)
    step(sched, {})  # prefill
    step(sched, {})
    assert sched.adaptive.temperature == 0.0
    add(sched, "b", temperature=0.7)
    step(sched, {})  # b's prefill: not decoding yet
    assert sched.adaptive.temperature == 0.0
    step(sched, {})
    assert sched.adaptive.temperature == 0.7


def test_the_step_that_prefills_a_branch_sends_its_prompt_to_its_drafter(random_llama_dir):
    """Warm drafts: as the target prefills the prompts, each drafter is sent
    its branches' prompts to prefill (jobs of no draft tokens), siblings
    together; then the first draft jobs, as without. Not for a prompt the
    draft's context cannot hold with a round on top, nor to a drafter that
    is down."""
    sched = make_scheduler(random_llama_dir, warm_drafts=True)
    pool = sched.pool
    sched.draft_max_len = 12  # 1 sampled token + 4 drafted (3 + 1 late) + 1: prompts of 6 at most
    for rid, group, prompt in (("a", "g1", (1, 2, 3)), ("b", "g1", (1, 2, 4)), ("c", "g2", (5, 6)),
                               ("long", "g2", tuple(range(1, 8)))):
        add(sched, rid, group, prompt=prompt)
    sched.schedule()  # the prefill step, scheduled
    assert [(d, [(j.req_id, j.token_ids, j.num_draft) for j in jobs]) for d, jobs in pool.jobs] == [
        (0, [("a", [1, 2, 3], 0), ("b", [1, 2, 4], 0)]), (1, [("c", [5, 6], 0)])]

    down = make_scheduler(random_llama_dir, warm_drafts=True)
    down.pool.down = {1}
    for rid, group in (("a", "g1"), ("c", "g2")):
        add(down, rid, group)
    step(down, {})
    warm = [(d, [j.req_id for j in jobs]) for d, jobs in down.pool.jobs if jobs[0].num_draft == 0]
    assert warm == [(0, ["a"])]
    assert [(d, [j.req_id for j in jobs]) for d, jobs in down.pool.jobs if jobs[0].num_draft] == [(0, ["a"])]


def test_the_step_log_records_each_step_when_asked(random_llama_dir, tmp_path, monkeypatch):
    import json

    monkeypatch.setenv("SEED_STEP_LOG", str(tmp_path))
    sched = make_scheduler(random_llama_dir)
    add(sched, "a", "g")
    add(sched, "b", "g")
    add(sched, "c", "h")  # the other drafter, whose draft has not landed
    step(sched, {})  # prefill: 3 prompt tokens each
    finish(sched.pool, 0, ["a", "b"], at=1.0)
    step(sched, {"a": [11, 12, 5], "b": [6]})  # a verifies 3 draft tokens, 2 accepted; b's rejected
    sched.finish_requests(["a", "b", "c"], _finished_status())
    step(sched, {})  # nothing left: the engine idles and the log is written
    header, *lines = [json.loads(s) for s in next(tmp_path.glob("steps-*.jsonl")).read_text().splitlines()]
    assert header["header"]["seed_config"]["num_drafters"] == 2
    prefill, verify = lines[:2]
    assert (prefill["prefill"], prefill["decoding"], prefill["spec"], prefill["wall"]) == (9, 0, 0, None)
    assert (verify["decoding"], verify["spec"], verify["drafts"], verify["emitted"]) == (3, 6, 2, 4)
    assert verify["held"] == {"first": 1}  # c waits for its first draft
    assert verify["start"] <= verify["end"] and verify["forward"] >= 0 and verify["wall"] > 0
    assert set(verify) >= {"blocked", "drafting", "shut", "window", "gate_gain", "gate_z", "plain_s"}


def test_held_branches_are_told_apart_by_why_they_wait(sched):
    """The step log's ``held``: a late draft dropped and sent again, a first
    draft, a draft sent with no token to decode meanwhile, one whose branch
    decoded all it was drafted longer for, and one due after the step."""
    fields = {  # rid: (jobs, lag, late_tokens)
        "redraft": (3, 1, 1), "first": (1, 1, 1), "no_lag": (2, 0, 0), "lag_spent": (2, 1, 0), "due_late": (2, 1, 1),
    }
    for rid, (jobs, lag, late) in fields.items():
        branch = sched.rounds.add(rid, None)
        branch.jobs, branch.lag, branch.late_tokens = jobs, lag, late
    sched._redrafted = {"redraft"}
    assert sched._held_reasons(list(fields)) == {rid: 1 for rid in fields}


def _finished_status():
    from vllm.v1.request import RequestStatus

    return RequestStatus.FINISHED_ABORTED
