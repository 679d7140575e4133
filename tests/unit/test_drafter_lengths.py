"""Chain drafts of different lengths in one drafter call (adaptive draft length)."""

import numpy as np
import pytest

from tests.conftest import DRAFT_DIR
from vllm_seed.drafter import Drafter
from vllm_seed.messages import DraftJob

STORY = [0, 1039, 406, 661, 275, 260, 597, 13, 478, 454, 260, 3893, 3895, 308, 3733, 3337, 15]
CAT = [0, 313, 1669, 265, 291, 339, 264, 267, 291, 306]
DOG = [0, 313, 1669, 265, 291, 15]


def drafter() -> Drafter:
    return Drafter(str(DRAFT_DIR), max_len=128)


@pytest.mark.parametrize("temperature, seed", [(0.0, None), (1.0, 7)])
def test_each_branch_gets_its_own_length_and_the_tokens_it_would_get_alone(temperature, seed):
    jobs = [DraftJob("a", STORY, 1, temperature, seed), DraftJob("b", CAT, 3, temperature, seed),
            DraftJob("c", DOG, 2, temperature, seed)]
    together = drafter().draft(jobs).drafts
    for job, draft in zip(jobs, together):
        alone = drafter().draft([job]).drafts[0]
        assert len(draft.token_ids) == job.num_draft and draft.token_ids == alone.token_ids
        if temperature:
            assert draft.probs.shape[0] == job.num_draft
            np.testing.assert_allclose(draft.probs, alone.probs, atol=1e-6)
        else:
            assert draft.probs is None


def test_the_next_round_after_short_and_long_drafts_matches_a_fresh_drafter():
    """The slot's cache holds what was fed, whatever each branch's length was."""
    d = drafter()
    first = d.draft([DraftJob("a", STORY, 1, 0.0), DraftJob("b", CAT, 3, 0.0)]).drafts
    # Round 2: "a" accepted its draft and a bonus token, "b" one of three and a recovery.
    nxt = [STORY + first[0].token_ids + [42], CAT + first[1].token_ids[:1] + [17]]
    again = d.draft([DraftJob("a", nxt[0], 3, 0.0), DraftJob("b", nxt[1], 2, 0.0)]).drafts
    fresh = drafter().draft([DraftJob("a", nxt[0], 3, 0.0), DraftJob("b", nxt[1], 2, 0.0)]).drafts
    assert [x.token_ids for x in again] == [x.token_ids for x in fresh]


def test_each_chain_token_carries_the_confidence_of_the_distribution_it_was_drawn_from():
    """Sampled: the largest probability of its q row. Greedy: of the draft's
    softmax at T=1, so the first token's equals a T=1 draft's first q row's."""
    d = drafter()
    greedy, sampled = d.draft([DraftJob("a", STORY, 3, 0.0), DraftJob("b", STORY, 3, 1.0, 7)]).drafts
    assert len(sampled.confidence) == 3
    np.testing.assert_allclose(sampled.confidence, sampled.probs.max(axis=1), rtol=1e-6)
    assert len(greedy.confidence) == 3 and all(0 < c <= 1 for c in greedy.confidence)
    assert greedy.confidence[0] == pytest.approx(float(sampled.probs[0].max()), rel=1e-5)


def test_a_warm_job_prefills_the_prompt_and_the_first_draft_feeds_only_what_came_after():
    """A job of no draft tokens (the scheduler's warm job) caches its prompt
    and yields no draft; the branch's first draft then feeds the drafter only
    the tokens after the prompt, and is the draft a fresh drafter makes."""
    d = drafter()
    warm = d.draft([DraftJob("a", STORY, 0, 0.0), DraftJob("b", CAT, 3, 0.0)])
    assert [x.req_id for x in warm.drafts] == ["b"]
    assert d.cached["a"] == STORY
    fed = []
    forward = d.lm.forward
    d.lm.forward = lambda slots, cached, feed: fed.append([len(f) for f in feed]) or forward(slots, cached, feed)
    first = d.draft([DraftJob("a", STORY + [42], 3, 0.0)]).drafts[0]
    assert fed[0] == [1]  # the sampled token only: the prompt was cached
    assert first.token_ids == drafter().draft([DraftJob("a", STORY + [42], 3, 0.0)]).drafts[0].token_ids
