"""SeedRounds policy with fake drafter results and a fake clock."""

import numpy as np
import pytest

from vllm_seed.messages import Draft, DraftBatch
from vllm_seed.rounds import SeedRounds, State, agrees, catch_up, trimmed


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def batch(drafter, req_ids, finished_at, n_ctx=5):
    return DraftBatch(drafter, [Draft(r, n_ctx, [1, 2, 3], None) for r in req_ids], finished_at, 0.01)


def test_siblings_share_a_drafter_and_groups_spread_over_drafters():
    rounds = SeedRounds(num_drafters=2)
    for r in ("a0", "a1", "a2"):
        rounds.add(r, group="A")
    rounds.add("b0", group="B")
    rounds.add("untagged", group=None)
    assert [rounds.branches[r].drafter for r in ("a0", "a1", "a2")] == [0, 0, 0]
    assert rounds.branches["b0"].drafter == 1
    assert rounds.branches["untagged"].drafter == 1  # least loaded
    assert rounds.to_dispatch(["a0", "a1", "b0", "untagged"]) == {0: ["a0", "a1"], 1: ["b0", "untagged"]}
    assert rounds.to_dispatch(["a0"]) == {}  # already drafting


def test_group_mapping_is_dropped_with_its_last_branch():
    rounds = SeedRounds(num_drafters=2)
    rounds.add("a0", group="A")
    rounds.add("a1", group="A")
    rounds.remove("a0")
    assert rounds.group_drafter == {"A": 0}
    rounds.remove("a1")
    assert rounds.group_drafter == {}


def test_verify_queue_is_fcfs_by_drafter_finish_time_and_holds_the_rest():
    clock = Clock()
    rounds = SeedRounds(num_drafters=3, clock=clock)
    for r in ("x", "y", "z"):
        rounds.add(r, group=r)
    rounds.to_dispatch(["x", "y", "z"])
    # y's drafter finished first although its result is listed last.
    rounds.admit([batch(0, ["x"], finished_at=2.0), batch(1, ["y"], finished_at=1.0)])
    verify, held = rounds.plan(["x", "y", "z"])
    assert verify == ["y", "x"]
    assert held == ["z"]
    clock.t = 0.5
    assert rounds.take("y").req_id == "y"
    assert rounds.branches["y"].state is State.VERIFYING
    assert rounds.stats.queue_wait_s == 0.5


def test_step_done_makes_verified_branches_idle_for_the_next_round():
    rounds = SeedRounds(num_drafters=1)
    rounds.add("x", None)
    rounds.to_dispatch(["x"])
    rounds.admit([batch(0, ["x"], 1.0)])
    rounds.take("x")
    rounds.step_done(["x"])
    assert rounds.branches["x"].state is State.IDLE
    assert rounds.to_dispatch(["x"]) == {0: ["x"]}


def test_requeued_draft_goes_to_the_front():
    rounds = SeedRounds(num_drafters=1)
    for r in ("x", "y"):
        rounds.add(r, None)
    rounds.to_dispatch(["x", "y"])
    rounds.admit([batch(0, ["x", "y"], 1.0)])
    draft = rounds.take("y")
    rounds.requeue("y", draft)
    assert list(rounds.verify_queue) == ["y", "x"]
    assert rounds.branches["y"].state is State.READY


def test_failed_draft_falls_back_to_one_plain_step_then_drafts_again():
    rounds = SeedRounds(num_drafters=1)
    rounds.add("x", None)
    rounds.to_dispatch(["x"])
    rounds.fail(["x"])
    verify, held = rounds.plan(["x"])
    assert (verify, held) == ([], [])  # scheduled plainly, not held
    assert rounds.stats.plain_fallbacks == 1
    rounds.step_done(["x"])
    assert rounds.to_dispatch(["x"]) == {0: ["x"]}


def test_late_result_for_a_branch_not_drafting_is_ignored():
    rounds = SeedRounds(num_drafters=1)
    rounds.add("x", None)
    rounds.admit([batch(0, ["x", "gone"], 1.0)])
    assert not rounds.verify_queue


def test_off_branches_never_draft():
    rounds = SeedRounds(num_drafters=1)
    rounds.add("x", None, speculate=False)
    assert rounds.to_dispatch(["x"]) == {}
    assert rounds.plan(["x"]) == ([], [])


def test_branches_of_a_down_drafter_decode_plainly_until_it_is_back():
    rounds = SeedRounds(num_drafters=2)
    rounds.add("a", "A")
    rounds.add("b", "B")
    assert rounds.to_dispatch(["a", "b"], down={0}) == {1: ["b"]}
    assert rounds.branches["a"].state is State.PLAIN
    assert rounds.plan(["a", "b"]) == ([], ["b"])
    rounds.step_done(["a"])
    assert rounds.to_dispatch(["a"], down=set()) == {0: ["a"]}


def test_admit_splits_a_draft_calls_time_into_transfer_and_delivery():
    clock = Clock()
    rounds = SeedRounds(num_drafters=1, clock=clock)
    for r in ("a", "b"):
        rounds.add(r, group=None)
    rounds.to_dispatch(["a", "b"])
    sent = batch(0, ["a"], finished_at=1.5)  # busy 0.01 s
    sent.submitted_at = 1.0
    clock.t = 2.0
    rounds.admit([sent, batch(0, ["b"], finished_at=1.7)])  # no submit time: not profiled
    stats = rounds.stats
    assert stats.draft_jobs == 1
    assert stats.draft_transfer_s == pytest.approx(0.49)  # 1.5 - 1.0 - 0.01
    assert stats.draft_undelivered_s == pytest.approx(0.5)  # done at 1.5, admitted at 2.0
    assert stats.drafter_busy_s == {0: pytest.approx(0.02)}


def test_catch_up_verifies_the_rest_of_a_draft_that_begins_with_what_was_decoded_meanwhile():
    q = np.arange(4, dtype=np.float32)[:, None] * np.ones((4, 5), dtype=np.float32)  # row i is all i
    draft = Draft("a", 3, [7, 8, 9, 10], q, [0.0, 0.1, 0.2, 0.3])  # drafted from a 3-token context
    assert catch_up(draft, [1, 2, 3], 4) is draft  # on time and short enough: as it is
    on_time = catch_up(draft, [1, 2, 3], 3)  # trimmed to the verifiable length
    assert (on_time.num_context, on_time.token_ids, on_time.probs[:, 0].tolist()) == (3, [7, 8, 9], [0, 1, 2])
    one = catch_up(draft, [1, 2, 3, 7], 3)
    assert (one.req_id, one.num_context, one.token_ids) == ("a", 4, [8, 9, 10])
    assert one.probs[:, 0].tolist() == [1, 2, 3]  # each token keeps the q it was drawn from
    assert one.confidence == [0.1, 0.2, 0.3]  # and its confidence
    two = catch_up(draft, [1, 2, 3, 7, 8], 1)
    assert (two.num_context, two.token_ids, two.probs.shape) == (5, [9], (1, 5))
    assert catch_up(Draft("a", 3, [7, 8], None), [1, 2, 3, 7], 3).probs is None  # greedy: no q


def test_a_trimmed_draft_keeps_its_first_tokens_with_their_q_rows_and_confidences():
    q = np.arange(3, dtype=np.float32)[:, None] * np.ones((3, 5), dtype=np.float32)
    draft = Draft("a", 3, [7, 8, 9], q, [0.9, 0.8, 0.1])
    cut = trimmed(draft, 2)
    assert (cut.req_id, cut.num_context, cut.token_ids, cut.probs[:, 0].tolist(), cut.confidence) == (
        "a", 3, [7, 8], [0, 1], [0.9, 0.8])
    assert trimmed(draft, 3) is draft
    assert trimmed(Draft("a", 3, [7, 8], None, [0.5, 0.5]), 1).probs is None


@pytest.mark.parametrize("tokens", [
    [1, 2, 3, 6],  # decoded meanwhile: not the draft's first token
    [1, 2, 3, 7, 6],  # its first, not its second
    [1, 2, 3, 7, 8, 9, 10],  # the whole draft: nothing left to verify
    [1, 2],  # shorter than the draft's context (rolled back)
])
def test_catch_up_drops_a_draft_its_branch_has_left_behind(tokens):
    draft = Draft("a", 3, [7, 8, 9, 10], None)
    assert catch_up(draft, tokens, 3) is None
    assert agrees(draft, tokens) == (tokens == [1, 2, 3, 7, 8, 9, 10])  # only that one agreed
