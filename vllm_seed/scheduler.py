"""SeedScheduler: vLLM's scheduler with SEED rounds (see rounds.py).

Each engine step: admit finished drafts to the verify queue (FCFS), give the
verify-queue branches their draft tokens, let branches still drafting decode
a plain token meanwhile if their drafts land during the step, else hold them
back (``late_drafts``), and let vLLM's scheduler build the batch (prefills,
plain decodes, and the drafts to verify) under its token budget. After the
step, verified branches are sent straight back to their drafters. When every
branch is waiting for a draft, it blocks on the next one instead of spinning
empty steps.
"""

from __future__ import annotations

import logging

from vllm_seed import _vllm_compat
from vllm_seed.adaptive import AdaptiveSpeculation
from vllm_seed.config import ADDITIONAL_CONFIG_KEY, SeedConfig
from vllm_seed.drafter_pool import DrafterPool, default_draft_cpus
from vllm_seed.gate import Gate
from vllm_seed.messages import DraftJob
from vllm_seed.metrics import StatsPublisher
from vllm_seed.pair import check_same_tokenizer, check_vocab_size, draft_context_len
from vllm_seed.rounds import SeedRounds, State, agrees, catch_up, trimmed
from vllm_seed.step_log import StepLog
from vllm_seed.step_meter import StepMeter
from vllm_seed.tree_verify import tree_unsupported_reason

logger = logging.getLogger("vllm.seed")  # under vLLM's configured logger
_SAMPLING_EPS = 1e-5  # vLLM treats temperature below this as greedy

Scheduler = _vllm_compat.scheduler_base()


class SeedScheduler(Scheduler):
    # Drafts are injected here, so the engine core skips its per-step poll of
    # the worker's proposer (patches/engine_core_draft_poll.py).
    supplies_draft_tokens = True

    def __init__(self, vllm_config, *args, **kwargs):
        super().__init__(vllm_config, *args, **kwargs)
        _vllm_compat.disable_placeholder_drafts(self)
        self.seed_config = SeedConfig.from_dict(vllm_config.additional_config[ADDITIONAL_CONFIG_KEY])
        self.draft_max_len = min(self.max_model_len, draft_context_len(self.seed_config.draft_model))
        self.rounds = SeedRounds(self.seed_config.num_drafters)
        self.late_decode = self.seed_config.late_drafts == "decode"
        tree = self.seed_config.tree
        self.adaptive = AdaptiveSpeculation(
            self.seed_config.num_speculative_tokens, self.seed_config.adaptive, self.rounds.clock,
            verify_tokens=None if tree is None else tree.num_nodes + 1,
            adaptive_length=self.seed_config.adaptive_length, gate=self.seed_config.gate,
            trim=self.seed_config.trim,
        )
        # This engine step as plain decoding would pay it: vLLM's scheduling, the forward
        # and vLLM's bookkeeping; not SEED's own work, not idle time.
        self._step_cost_s = 0.0
        self._step_started_at = None
        self._step_ended_at = None  # update_from_output's return, while work remains
        self.publisher = StatsPublisher(self.rounds.stats)
        model = vllm_config.model_config
        if not model.skip_tokenizer_init:
            check_same_tokenizer(model.tokenizer, self.seed_config.draft_model, model.trust_remote_code)
        self.pool = self._make_pool(vllm_config)
        self.tree = self.seed_config.tree
        self.meter = StepMeter(self.adaptive, self.tree)
        self._logged_off: set[str] = set()
        self.step_log = StepLog({"seed_config": vllm_config.additional_config[ADDITIONAL_CONFIG_KEY]})
        self._step_decoding: list[str] = []  # this step's decoding branches, for step_log
        self._step_blocked_s = 0.0
        self._step_entered_at = 0.0
        self._step_held: dict[str, int] = {}  # why this step's held branches wait, for step_log
        self._redrafted: set[str] = set()  # this step's late drafts dropped and sent again

    def _make_pool(self, vllm_config) -> DrafterPool:
        pool = DrafterPool(self.seed_config, self.draft_max_len, default_draft_cpus(self.seed_config))
        try:
            check_vocab_size(self.seed_config.draft_model, pool.vocab_size,
                             vllm_config.model_config.get_vocab_size())
        except ValueError:
            pool.shutdown()
            raise
        return pool

    def schedule(self, *args, **kwargs):
        entered_at = self.rounds.clock()
        stats = self.rounds.stats
        if self._step_ended_at is not None:
            stats.add_phase("engine_loop", entered_at - self._step_ended_at)
        blocked_before = stats.blocked_wait_s
        self._sync_branches()
        decoding = [r.request_id for r in self.running if self._is_decoding(r)]
        self.meter.num_decoding = len(decoding)
        self.adaptive.temperature = max((_temperature(self.requests[r]) for r in decoding), default=0.0)
        self.adaptive.tick(len(decoding))  # the step counts from here: drafts admitted now land in it
        self._admit(timeout_s=0)
        self.adaptive.load(len(decoding))
        if decoding and self.adaptive.window:
            stats.plain_window_steps += 1
        elif decoding and self.adaptive.gate(len(decoding)).shut:
            stats.gate_shut_steps += 1
        self._dispatch(decoding, num_decoding=len(decoding))
        verify, held = self.rounds.plan(decoding)
        if held and not self._can_admit():
            verify, held = self._wait_for_drafts(decoding, verify, held)
        drafts = self._inject(verify, held, len(decoding))
        late = [rid for rid in held if self._lands_during_step(rid, len(decoding))]
        if late:  # their drafts still serve after the token they decode meanwhile
            held = [rid for rid in held if rid not in late]
            for rid in late:
                self.rounds.branches[rid].late_tokens -= 1
        if self.step_log.path:
            self._step_held = self._held_reasons(held)
        out = self._schedule_without(held, verify, *args, **kwargs)
        self._requeue_unscheduled(out, drafts)
        if self.seed_config.warm_drafts and out.scheduled_new_reqs:
            self._warm(out.scheduled_new_reqs)
        out.seed_draft_probs = {
            rid: drafts[rid].probs[: len(toks)]
            for rid, toks in out.scheduled_spec_decode_tokens.items()
            if rid in drafts and drafts[rid].probs is not None
        }
        self.meter.confidence = {  # what the verdicts teach adaptive.ConfidenceModel
            rid: (drafts[rid].confidence[: len(toks)], _temperature(self.requests[rid]))
            for rid, toks in out.scheduled_spec_decode_tokens.items()
            if rid in drafts and drafts[rid].confidence is not None
        }
        stats.held_back_steps += len(held)
        stats.late_steps += sum(1 for rid in late if rid in out.num_scheduled_tokens)
        if out.scheduled_spec_decode_tokens:
            stats.target_steps_with_drafts += 1
            stats.drafts_verified += len(out.scheduled_spec_decode_tokens)
        stats.drafter_restarts = getattr(self.pool, "restarts", 0)
        self.publisher.maybe_publish()
        self._step_started_at = self.rounds.clock()
        blocked = stats.blocked_wait_s - blocked_before  # its own counter
        self._step_decoding, self._step_blocked_s, self._step_entered_at = decoding, blocked, entered_at
        vllm_s = self._step_cost_s  # _schedule_without: vLLM's scheduler
        stats.add_phase("vllm_schedule", vllm_s)
        stats.add_phase("seed_schedule", self._step_started_at - entered_at - vllm_s - blocked)
        return out

    def update_from_output(self, scheduler_output, model_runner_output):
        entered_at = self.rounds.clock()
        stats = self.rounds.stats
        forward_s = None
        if self._step_started_at is not None:  # the executor: target forward, sampling
            forward_s = entered_at - self._step_started_at
            self._step_started_at = None
            self._step_cost_s += forward_s
            stats.engine_steps += 1
            verified = bool(scheduler_output.scheduled_spec_decode_tokens)
            stats.add_phase("target_verify" if verified else "target_plain", forward_s)
        self.meter.verdicts(scheduler_output, model_runner_output)
        started_at = self.rounds.clock()
        outputs = super().update_from_output(scheduler_output, model_runner_output)
        vllm_s = self.rounds.clock() - started_at
        self._step_cost_s += vllm_s
        self.meter.step_cost(scheduler_output, self._step_cost_s)
        self.rounds.step_done(scheduler_output.num_scheduled_tokens)
        self._sync_branches()
        # Re-draft verified branches now: drafting overlaps the next target step.
        self._dispatch([
            rid for rid in scheduler_output.num_scheduled_tokens
            if rid in self.requests and self._is_decoding(self.requests[rid])
        ])
        ended_at = self.rounds.clock()
        stats.add_phase("vllm_update", vllm_s)
        stats.add_phase("seed_update", ended_at - entered_at - vllm_s)
        drafting = self.pool.drafting()
        self.meter.rates(scheduler_output, model_runner_output, self._step_ended_at, ended_at, drafting)
        if self.step_log.path:
            self.step_log.record(
                scheduler_output, model_runner_output, self._step_decoding, start=self._step_entered_at, end=ended_at,
                wall=None if self._step_ended_at is None else ended_at - self._step_ended_at,
                forward=forward_s, blocked=self._step_blocked_s, drafting=drafting, held=self._step_held,
                **self._gate_fields(),
            )
        # The gap to the next step is engine-loop overhead while work remains; with none
        # left, the engine idles until a request arrives: not counted.
        self._step_ended_at = ended_at if (self.running or self.waiting) else None
        if self._step_ended_at is None:
            self.publisher.maybe_publish(force=True)
            self.step_log.flush()
        return outputs

    def _gate_fields(self) -> dict:
        """The step's gate as the step log records it: shut, in a plain
        window, its gain and z, and plain decoding's predicted step time."""
        num_decoding = self.meter.num_decoding
        gate = self.adaptive.gates.get(self.adaptive.regime(num_decoding)) or Gate()  # logging creates none
        return {"shut": bool(gate.shut), "window": bool(self.adaptive.window), "gate_gain": gate.gain(),
                "gate_z": gate.z() if gate.steps else None, "plain_s": self.adaptive.plain_s(num_decoding)}

    def shutdown(self) -> None:
        self.pool.shutdown()
        super().shutdown()

    def _inject(self, verify: list[str], held: list[str], num_decoding: int) -> dict:
        drafts, stale = {}, []
        stats = self.rounds.stats
        for rid in verify:
            draft = self.rounds.take(rid)
            request = self.requests[rid]
            ahead = request.num_tokens - draft.num_context  # tokens it decoded meanwhile
            if self.tree is None:
                if ahead:  # its first draft tokens: as if accepted, or a rejection
                    self.adaptive.late_draft(rid, ahead if agrees(draft, request.all_token_ids) else 0)
                draft = catch_up(draft, request.all_token_ids, self.seed_config.num_speculative_tokens)
            elif ahead:  # a tree is verified whole or not at all
                draft = None
            if ahead:
                stats.late_drafts_verified += draft is not None
                stats.late_drafts_dropped += draft is None
            if draft is None:
                stale.append(rid)
                continue
            if draft.confidence is not None:
                keep = self.adaptive.trim_length(draft.confidence, _temperature(request), num_decoding)
                stats.trimmed_tokens += len(draft.token_ids) - keep
                if keep == 0:
                    self.rounds.plain(rid)
                    self.adaptive.cut(rid)
                    continue
                draft = trimmed(draft, keep)
            request.spec_token_ids = list(draft.token_ids)
            drafts[rid] = draft
        self._redrafted = set(stale)
        if stale:  # draft again, one job per drafter
            for rid in stale:
                self.rounds.drop(rid)
            self._dispatch(stale)
            held.extend(rid for rid in stale if self.rounds.branches[rid].state is State.DRAFTING)
        return drafts

    def _held_reasons(self, held: list[str]) -> dict[str, int]:
        """Why each branch held back this step waits (the step log's
        ``held``): ``redraft`` its late draft was dropped this step and sent
        again; ``first`` its first draft (the drafter prefills its prompt);
        ``no_lag`` its draft was sent with no plain token to decode meanwhile
        (``_late_tokens`` 0, or late drafts held); ``lag_spent`` it has
        decoded as many meanwhile as its draft was made longer for;
        ``due_late`` its draft is due after this step."""
        reasons: dict[str, int] = {}
        for rid in held:
            branch = self.rounds.branches[rid]
            if rid in self._redrafted:
                why = "redraft"
            elif branch.jobs == 1:
                why = "first"
            elif branch.lag <= 0:
                why = "no_lag"
            elif branch.late_tokens <= 0:
                why = "lag_spent"
            else:
                why = "due_late"
            reasons[why] = reasons.get(why, 0) + 1
        return reasons

    def _schedule_without(self, held: list[str], verify: list[str], *args, **kwargs):
        held_set = set(held)
        held_reqs = [r for r in self.running if r.request_id in held_set]
        order = {rid: i for i, rid in enumerate(verify)}
        kept = [r for r in self.running if r.request_id not in held_set]
        kept.sort(key=lambda r: order.get(r.request_id, len(order)))  # FCFS first
        self.running = kept
        # Held branches still occupy sequence slots: keep max_num_seqs honest.
        self.max_num_running_reqs -= len(held_reqs)
        self.max_num_active_reqs -= len(held_reqs)
        started_at = self.rounds.clock()
        try:
            return super().schedule(*args, **kwargs)
        finally:
            self._step_cost_s = self.rounds.clock() - started_at
            self.max_num_running_reqs += len(held_reqs)
            self.max_num_active_reqs += len(held_reqs)
            self.running = self.running + held_reqs

    def _requeue_unscheduled(self, out, drafts: dict) -> None:
        # A branch scheduled with a trimmed draft is verified as far as it
        # fits; one not scheduled at all keeps its draft at the queue head.
        for rid in reversed(list(drafts)):
            if rid not in out.num_scheduled_tokens:
                self.requests[rid].spec_token_ids = []
                self.rounds.requeue(rid, drafts[rid])

    def _admit(self, timeout_s: float) -> None:
        start = self.rounds.clock()
        batches, failed = self.pool.poll(timeout_s, self.seed_config.draft_timeout_s)
        if timeout_s:
            self.rounds.stats.blocked_wait_s += self.rounds.clock() - start
        self.rounds.admit(batches)
        if self.tree is None:  # a chain's draft tokens are its forwards; a tree's nodes are not
            for batch in batches:
                self.adaptive.drafted(batch.busy_s, max((len(d.token_ids) for d in batch.drafts), default=0))
        for _, req_ids in failed:
            self.rounds.fail(req_ids)

    def _wait_for_drafts(self, decoding, verify, held) -> tuple[list[str], list[str]]:
        """Block for drafts in flight when that beats running the step now.

        Nothing else to run: wait for the first draft (max_wait_ms at most).
        Only ready drafts to verify: each target step pays a fixed cost, so
        verifying them now and the late ones a step later costs that fixed
        cost again; waiting costs less if the held drafts land sooner (on CPU
        a step's fixed cost is ~45 ms and a draft call ~20 ms). Plain decodes
        or prefills to run: the step now does real work; no wait."""
        if len(held) == len(self.running):
            self._admit(timeout_s=self.seed_config.max_wait_ms / 1000)
            return self.rounds.plan(decoding)
        if len(verify) + len(held) < len(self.running):
            return verify, held
        fixed, land = self.adaptive.fixed_step_s(), self.pool.time_to_land()
        if fixed is None or land is None or land >= fixed:
            return verify, held
        deadline = self.rounds.clock() + fixed  # waiting longer than this would not pay
        while held and (left := deadline - self.rounds.clock()) > 0:
            self._admit(timeout_s=left)
            verify, held = self.rounds.plan(decoding)
        return verify, held

    def _dispatch(self, req_ids: list[str], num_decoding: int | None = None) -> None:
        if num_decoding is None:
            num_decoding = self._num_decoding()
        limit = self.seed_config.disable_by_batch_size
        over_limit = limit is not None and num_decoding > limit
        for rid in req_ids:
            branch = self.rounds.branches.get(rid)
            if branch is None or branch.state is not State.IDLE:
                continue
            if not self._fits_draft_context(self.requests[rid].num_tokens):
                branch.state = State.OFF  # beyond the draft's context: plain decoding
            elif over_limit or not self.adaptive.should_draft(rid, num_decoding):
                self.rounds.pause(rid)
        jobs = self.rounds.to_dispatch(req_ids, self.pool.down)
        dispatched = {rid for rids in jobs.values() for rid in rids}
        for drafter, rids in jobs.items():
            lag = self._late_tokens(drafter, dispatched, num_decoding)
            for rid in rids:
                self.rounds.branches[rid].late_tokens = self.rounds.branches[rid].lag = lag
            self.pool.submit(drafter, [self._job(self.requests[rid], num_decoding, lag) for rid in rids])

    def _warm(self, new_reqs) -> None:
        """Send the prompts of the branches this step prefills to their
        drafters (``warm_drafts``), as jobs of no draft tokens: the drafter
        prefills them while the target does, and the branch's first draft
        then feeds it a round's few tokens. Not for branches that never
        speculate or would outgrow the draft's context at once, nor to a
        drafter that is down."""
        self._sync_branches()
        jobs: dict[int, list[DraftJob]] = {}
        for data in new_reqs:
            branch = self.rounds.branches.get(data.req_id)
            if branch is None or branch.state is State.OFF or branch.drafter in self.pool.down:
                continue
            prompt = self.requests[data.req_id].prompt_token_ids
            if self._fits_draft_context(len(prompt) + 1):  # with the token its prefill samples
                jobs.setdefault(branch.drafter, []).append(DraftJob(data.req_id, list(prompt), 0, 0.0))
        for drafter, drafter_jobs in jobs.items():
            self.pool.submit(drafter, drafter_jobs)

    def _fits_draft_context(self, num_tokens: int) -> bool:
        """Whether a branch of ``num_tokens`` tokens, with a round's draft
        (made one longer for late drafts) and its bonus token on top, fits
        the draft's context; beyond it the branch decodes plainly."""
        k = self.seed_config.num_speculative_tokens + (1 if self.late_decode else 0)
        return num_tokens + k + 1 <= self.draft_max_len

    def _lands_during_step(self, rid: str, num_decoding: int) -> bool:
        """Whether ``rid``'s draft should land before a target step starting
        now ends (late_drafts "decode"): then its branch decodes a token
        meanwhile, and the draft still serves after it (rounds.catch_up).
        A draft due later would be left behind by the branch's plain tokens:
        the branch is held back for it instead; so is a branch that has
        decoded meanwhile as many tokens as its draft was made longer for
        (``_late_tokens``), as more would leave less than its draft length
        to verify. The step is at least a plain one of the decoding branches
        (the target's step-cost fit)."""
        if not self.late_decode or self.rounds.branches[rid].late_tokens <= 0:
            return False
        left = self.pool.time_left(self.rounds.branches[rid].drafter)
        step_s = self.adaptive.steps.predict(num_decoding)
        return left is not None and step_s is not None and left <= step_s

    def _late_tokens(self, drafter: int, dispatched: set[str], num_decoding: int) -> int:
        """Tokens the branches sent to ``drafter`` now will likely decode
        meanwhile (``_lands_during_step``), drafted on top of their draft
        length so that as many are left to verify once they have caught up:
        none if the next step waits for the drafts sent now (each running
        branch is among them and no request waits to be admitted), or if the
        drafter's recent call takes longer than a step; else one."""
        if not self.late_decode:
            return 0
        if not self._can_admit() and all(r.request_id in dispatched for r in self.running):
            return 0
        call_s, step_s = self.pool.call_time(drafter), self.adaptive.steps.predict(num_decoding)
        return int(call_s is not None and step_s is not None and call_s <= step_s)

    def _job(self, request, num_decoding: int, lag: int = 0) -> DraftJob:
        params = request.sampling_params
        config = self.seed_config
        return DraftJob(
            request.request_id, list(request.all_token_ids),
            self.adaptive.draft_length(request.request_id, num_decoding) + lag, _temperature(request), params.seed,
            k_config=config.k_config if self.tree else (), replacement=config.replacement,
        )

    def _sync_branches(self) -> None:
        gone: dict[int, list[str]] = {}
        for rid in list(self.rounds.branches):
            request = self.requests.get(rid)
            if request is None or request.is_finished():
                gone.setdefault(self.rounds.remove(rid).drafter, []).append(rid)
                self.adaptive.remove(rid)
        for drafter, rids in gone.items():
            self.pool.free(drafter, rids)
        for request in self.running:
            if request.request_id not in self.rounds.branches:
                extra = request.sampling_params.extra_args or {}
                group = extra.get("seed_group")
                self.rounds.add(
                    request.request_id, None if group is None else str(group), self._may_speculate(request)
                )

    def _may_speculate(self, request) -> bool:
        """Tree verification computes the target's distribution from raw
        logits, so a request whose sampling depends on more decodes plainly."""
        if self.tree is None:
            return True
        reason = tree_unsupported_reason(request.sampling_params)
        if reason and reason not in self._logged_off:
            self._logged_off.add(reason)
            logger.warning("SEED token trees: requests with %s decode without speculation", reason)
        return reason is None

    def _num_decoding(self) -> int:
        return sum(1 for r in self.running if self._is_decoding(r))

    def _can_admit(self) -> bool:
        return bool(self.waiting) and len(self.running) < self.max_num_running_reqs

    @staticmethod
    def _is_decoding(request) -> bool:
        return not request.is_finished() and request.num_computed_tokens == request.num_tokens - 1


def _temperature(request) -> float:
    """The request's sampling temperature; 0 for greedy (vLLM's threshold)."""
    temperature = request.sampling_params.temperature
    return temperature if temperature >= _SAMPLING_EPS else 0.0
