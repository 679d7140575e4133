"""SEED's round policy: which branch drafts where, what is verified, what waits.

Vocabulary (used everywhere in vllm-seed):

- **branch**: one running request; ToT siblings (the n thoughts of a node, or
  its n evaluations) are branches that share a ``seed_group`` tag.
- **drafter**: a small draft model in its own Ray actor. Each branch is
  assigned to one drafter for life; a group's branches share a drafter, so
  they are drafted together as one batch.
- **draft**: the L tokens (and, when sampled, their draft distributions q) a
  drafter proposes for one branch. It is valid only for the context length it
  was drafted from.
- **round**: one draft-then-verify cycle of a branch.
- **verify queue**: ready drafts in the order their drafters finished (FCFS).
  Every target step verifies the drafts queued so far, in queue order, under
  vLLM's token budget, so drafting of some branches overlaps the target's
  verification of others.
- **late draft**: a draft still in flight when a target step runs that has
  other work to do. If it should land during the step (chain drafts, the
  default), its branch decodes a plain token meanwhile, and the draft is
  then verified from the token after the ones decoded meanwhile if it begins
  with them (``catch_up``), else dropped. Otherwise the branch is **held
  back**: left out of the step (it keeps its KV blocks) until its draft
  lands. When no step has work without the drafts in flight, the scheduler
  blocks on the next draft.
- **accepted / recovered / bonus tokens**: as in vLLM's rejection sampler:
  accepted draft tokens, the token sampled from the residual at the first
  rejection, and the extra target token when all L are accepted.

This module is pure Python: no vLLM, no torch, no Ray; the clock is injected.
"""

from __future__ import annotations

import enum
import time
from collections import OrderedDict
from dataclasses import dataclass, field

from vllm_seed.messages import Draft, DraftBatch


class State(enum.Enum):
    IDLE = "idle"  # decoding, no draft asked for yet
    DRAFTING = "drafting"  # a draft job is in flight: held back
    READY = "ready"  # its draft is in the verify queue
    VERIFYING = "verifying"  # scheduled in the current target step
    PLAIN = "plain"  # decodes one plain token this step (draft failed, or paused)
    OFF = "off"  # never speculates (e.g. longer than the draft's context)


@dataclass
class Branch:
    drafter: int
    group: str | None = None
    state: State = State.IDLE
    late_tokens: int = 0  # plain tokens it may decode while its draft is in flight: those drafted extra
    lag: int = 0  # late_tokens when its draft in flight was sent
    jobs: int = 0  # draft jobs sent for it


@dataclass
class RoundStats:
    drafts_verified: int = 0
    target_steps_with_drafts: int = 0
    held_back_steps: int = 0
    late_steps: int = 0  # branch-steps decoded plainly while the branch's draft was in flight
    late_drafts_verified: int = 0  # drafts verified after their branch decoded meanwhile
    late_drafts_dropped: int = 0  # late drafts that did not begin with what was decoded meanwhile
    trimmed_tokens: int = 0  # draft tokens cut by confidence before verification (adaptive.py)
    trimmed_drafts: int = 0  # drafts cut to nothing: their branch decoded plainly
    plain_fallbacks: int = 0
    paused_steps: int = 0
    gate_shut_steps: int = 0  # engine steps with speculation off at their load (adaptive.py)
    plain_window_steps: int = 0  # engine steps measuring plain decoding alone
    drafter_restarts: int = 0
    queue_wait_s: float = 0.0
    blocked_wait_s: float = 0.0
    drafter_busy_s: dict[int, float] = field(default_factory=dict)
    # Where a draft job's time goes besides drafting (the profile of issue 8):
    draft_jobs: int = 0  # drafter calls admitted
    draft_transfer_s: float = 0.0  # submit -> finished, minus drafting: Ray and actor queue
    draft_undelivered_s: float = 0.0  # finished -> admitted: done while the target stepped
    # Engine-core wall time by phase (scheduler.py): SEED's and vLLM's scheduling, the
    # executor (target forward, sampling, verification) with and without drafts, vLLM's and
    # SEED's output processing, and the engine loop between steps.
    engine_steps: int = 0
    phase_s: dict[str, float] = field(default_factory=dict)

    def add_phase(self, name: str, seconds: float) -> None:
        self.phase_s[name] = self.phase_s.get(name, 0.0) + seconds


def agrees(draft: Draft, token_ids) -> bool:
    """Whether the tokens its branch, now ``token_ids`` (prompt and output),
    decoded since ``draft`` was made are the draft's first tokens."""
    ahead = len(token_ids) - draft.num_context
    return 0 <= ahead <= len(draft.token_ids) and list(token_ids[draft.num_context:]) == draft.token_ids[:ahead]


def catch_up(draft: Draft, token_ids, max_tokens: int) -> Draft | None:
    """The part of a chain draft to verify for its branch, now ``token_ids``:
    the draft less the tokens the branch decoded since it was drafted, if they
    are its first tokens (``agrees``), and at most ``max_tokens``; None if
    they are not, or nothing is left.

    Lossless: draft token i was drawn from q given the tokens before it, so
    given that its first tokens equal the ones decoded meanwhile, the rest
    is a draft drawn from q for the branch as it is now."""
    ahead = len(token_ids) - draft.num_context
    if ahead == len(draft.token_ids) or not agrees(draft, token_ids):
        return None
    if ahead == 0 and len(draft.token_ids) <= max_tokens:
        return draft
    end = ahead + max_tokens
    probs = None if draft.probs is None else draft.probs[ahead:end]
    confidence = None if draft.confidence is None else draft.confidence[ahead:end]
    return Draft(draft.req_id, len(token_ids), draft.token_ids[ahead:end], probs, confidence)


def trimmed(draft: Draft, length: int) -> Draft:
    """The first ``length`` tokens of a chain draft, with their q rows and confidences."""
    if length >= len(draft.token_ids):
        return draft
    probs = None if draft.probs is None else draft.probs[:length]
    confidence = None if draft.confidence is None else draft.confidence[:length]
    return Draft(draft.req_id, draft.num_context, draft.token_ids[:length], probs, confidence)


class SeedRounds:
    def __init__(self, num_drafters: int, clock=time.monotonic):
        self.num_drafters = num_drafters
        self.clock = clock
        self.branches: dict[str, Branch] = {}
        self.group_drafter: dict[str, int] = {}
        self.verify_queue: OrderedDict[str, tuple[Draft, float]] = OrderedDict()
        self.stats = RoundStats()

    def add(self, req_id: str, group: str | None, speculate: bool = True) -> Branch:
        if group is not None and group in self.group_drafter:
            drafter = self.group_drafter[group]
        else:
            drafter = self._least_loaded()
            if group is not None:
                self.group_drafter[group] = drafter
        branch = Branch(drafter, group, State.IDLE if speculate else State.OFF)
        self.branches[req_id] = branch
        return branch

    def remove(self, req_id: str) -> Branch | None:
        self.verify_queue.pop(req_id, None)
        branch = self.branches.pop(req_id, None)
        if branch is not None and branch.group is not None:
            if not any(b.group == branch.group for b in self.branches.values()):
                del self.group_drafter[branch.group]
        return branch

    def to_dispatch(self, req_ids, down: set[int] = frozenset()) -> dict[int, list[str]]:
        """Idle branches among ``req_ids``, grouped by drafter; now DRAFTING.
        Branches of a drafter that is ``down`` decode plainly this step."""
        jobs: dict[int, list[str]] = {}
        for req_id in req_ids:
            branch = self.branches.get(req_id)
            if branch is None or branch.state is not State.IDLE:
                continue
            if branch.drafter in down:
                branch.state = State.PLAIN
                self.stats.plain_fallbacks += 1
            else:
                branch.state = State.DRAFTING
                branch.jobs += 1
                jobs.setdefault(branch.drafter, []).append(req_id)
        return jobs

    def pause(self, req_id: str) -> None:
        """Adaptive speculation: an idle branch decodes plainly this step."""
        branch = self.branches.get(req_id)
        if branch is not None and branch.state is State.IDLE:
            branch.state = State.PLAIN
            self.stats.paused_steps += 1

    def admit(self, batches: list[DraftBatch]) -> None:
        """Finished drafts enter the verify queue in completion order."""
        now = self.clock()
        for batch in sorted(batches, key=lambda b: b.finished_at):
            busy = self.stats.drafter_busy_s
            busy[batch.drafter] = busy.get(batch.drafter, 0.0) + batch.busy_s
            if batch.submitted_at is not None:
                self.stats.draft_jobs += 1
                self.stats.draft_transfer_s += max(
                    0.0, batch.finished_at - batch.submitted_at - batch.busy_s)
                self.stats.draft_undelivered_s += max(0.0, now - batch.finished_at)
            for draft in batch.drafts:
                branch = self.branches.get(draft.req_id)
                if branch is not None and branch.state is State.DRAFTING:
                    branch.state = State.READY
                    self.verify_queue[draft.req_id] = (draft, now)

    def fail(self, req_ids) -> None:
        """Drafts that will never come: those branches decode plainly this step."""
        for req_id in req_ids:
            branch = self.branches.get(req_id)
            if branch is not None and branch.state is State.DRAFTING:
                branch.state = State.PLAIN
                self.stats.plain_fallbacks += 1

    def plan(self, decoding: list[str]) -> tuple[list[str], list[str]]:
        """(branches to verify, in FCFS order; branches to hold back)."""
        wanted = set(decoding)
        verify = [r for r in self.verify_queue if r in wanted]
        held = [
            r for r in decoding
            if r in self.branches and self.branches[r].state is State.DRAFTING
        ]
        return verify, held

    def take(self, req_id: str) -> Draft:
        """Pop a ready draft for the target step being built."""
        draft, queued_at = self.verify_queue.pop(req_id)
        self.stats.queue_wait_s += self.clock() - queued_at
        self.branches[req_id].state = State.VERIFYING
        return draft

    def requeue(self, req_id: str, draft: Draft) -> None:
        """A taken draft the target step had no room for goes back to the front."""
        self.branches[req_id].state = State.READY
        self.verify_queue[req_id] = (draft, self.clock())
        self.verify_queue.move_to_end(req_id, last=False)

    def plain(self, req_id: str) -> None:
        """A taken draft cut to nothing: its branch decodes plainly this step."""
        self.branches[req_id].state = State.PLAIN
        self.stats.trimmed_drafts += 1

    def drop(self, req_id: str) -> None:
        """A draft that no longer matches its branch: draft again."""
        self.verify_queue.pop(req_id, None)
        self.branches[req_id].state = State.IDLE

    def step_done(self, req_ids) -> None:
        """The target step ran: verified and plain branches are idle again."""
        for req_id in req_ids:
            branch = self.branches.get(req_id)
            if branch is not None and branch.state in (State.VERIFYING, State.PLAIN):
                branch.state = State.IDLE

    def _least_loaded(self) -> int:
        load = [0] * self.num_drafters
        for branch in self.branches.values():
            load[branch.drafter] += 1
        return load.index(min(load))
