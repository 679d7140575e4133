"""Our Blocksworld plan checker on all 590 gold plans, their mutations and both action syntaxes."""

from __future__ import annotations

import json

import pytest

from vllm_seed.tot.blocksworld import ROOT, SPLIT_STEPS
from vllm_seed.tot.plan_checker import (
    Action, Instance, check_plan, parse_action, parse_pddl, parse_plan,
)


def load_items() -> list[tuple[Instance, tuple[Action, ...], int]]:
    items = []
    for k in SPLIT_STEPS:
        path = ROOT / "llm-reasoners" / "split_v1" / f"split_v1_step_{k}_data.json"
        for instance_path, gold, min_steps in json.loads(path.read_text()):
            instance = parse_pddl((ROOT / instance_path).read_text())
            items.append((instance, parse_plan(gold), min_steps))
    return items


ITEMS = load_items()


def test_all_590_gold_plans_are_valid_and_reach_the_goal():
    assert len(ITEMS) == 590
    assert [len(actions) for _, actions, _ in ITEMS] == [k for _, _, k in ITEMS]
    results = [check_plan(instance, actions) for instance, actions, _ in ITEMS]
    assert [r.correct for r in results] == [True] * 590
    assert {r.reason for r in results} == {"goal reached"}


def test_gold_plans_in_text_form_parse_back_to_the_same_actions():
    for instance, actions, _ in ITEMS:
        text = "\n" + "\n".join(a.text() for a in actions) + "\n[PLAN END]\n"
        assert parse_plan(text) == actions


def test_removing_any_action_of_an_optimal_plan_is_rejected():
    # The plans are optimal, so no shorter plan can reach the goal.
    for instance, actions, k in ITEMS:
        for i in range(k):
            assert not check_plan(instance, actions[:i] + actions[i + 1:]).correct


def test_swapping_the_first_two_actions_fails_at_the_first():
    # Every gold plan starts by taking a block (hand empty) and then placing it.
    for instance, actions, _ in ITEMS:
        check = check_plan(instance, (actions[1], actions[0]) + actions[2:])
        assert (check.executable, check.correct, check.failed_at) == (False, False, 0)


INSTANCE_41 = parse_pddl((ROOT / "LLMs-Planning/llm_planning_analysis/instances/blocksworld/"
                          "generated_basic/instance-41.pddl").read_text())


def test_parse_pddl_instance_41():
    assert INSTANCE_41 == Instance(
        objects=("a", "b", "c", "d"),
        init=frozenset({("handempty",), ("ontable", "a"), ("on", "b", "c"), ("on", "c", "a"),
                        ("ontable", "d"), ("clear", "b"), ("clear", "d")}),
        goal=frozenset({("on", "b", "d"), ("on", "c", "a")}),
    )


@pytest.mark.parametrize("plan, failed_at, reason", [
    ("(stack b d)", 0, "(stack b d) needs (holding b)"),
    ("(pick-up b)", 0, "(pick-up b) needs (ontable b)"),
    ("(unstack c a)", 0, "(unstack c a) needs (clear c)"),
    ("(unstack b c)\n(unstack d a)", 1, "(unstack d a) needs (handempty)"),
    ("(unstack b c)\n(stack b b)", 1, "(stack b b) needs (clear b)"),
    ("(unstack b c)\n(put-down c)", 1, "(put-down c) needs (holding c)"),
    ("(unstack b z)", 0, "unknown object z in (unstack b z)"),
    ("(stack b)", 0, "wrong number of arguments in (stack b)"),
    ("(fly b)", 0, "unknown action (fly b)"),
])
def test_illegal_moves_are_rejected_with_the_reason(plan, failed_at, reason):
    check = check_plan(INSTANCE_41, parse_plan(plan))
    assert (check.executable, check.correct, check.failed_at, check.reason) == (
        False, False, failed_at, reason)


def test_legal_plan_short_of_the_goal_is_executable_but_wrong():
    check = check_plan(INSTANCE_41, parse_plan("(unstack b c)\n(put-down b)"))
    assert (check.executable, check.reaches_goal, check.correct, check.reason) == (
        True, False, False, "goal atom (on b d) unmet")


def test_hand_may_hold_a_block_at_the_end():
    instance = Instance(("a", "b"), frozenset({("handempty",), ("ontable", "a"),
                        ("ontable", "b"), ("clear", "a"), ("clear", "b")}),
                        frozenset({("ontable", "b")}))
    assert check_plan(instance, [Action("pick-up", ("a",))]).correct


@pytest.mark.parametrize("line, action", [
    ("unstack the blue block from on top of the orange block", Action("unstack", ("b", "c"))),
    ("Stack the Blue block on top of the Yellow block.", Action("stack", ("b", "d"))),
    ("1. pick up the red block", Action("pick-up", ("a",))),
    ("put down the white block", Action("put-down", ("e",))),
    ("  (unstack b c)  ", Action("unstack", ("b", "c"))),
    ("(PICK-UP a)", Action("pick-up", ("a",))),
    ("stack the red block", None),  # wrong arity: dropped, as llm-reasoners does
    ("pick up the red block and the blue block", None),
    ("the red block is clear", None),
    ("", None),
])
def test_parse_action(line, action):
    assert parse_action(line) == action


def test_parse_plan_skips_junk_and_stops_at_the_end_mark():
    text = "\nunstack the blue block from on top of the orange block\nhmm\n(stack b d)\n" \
           "[PLAN END]\npick up the red block\n"
    assert parse_plan(text) == (Action("unstack", ("b", "c")), Action("stack", ("b", "d")))
    assert check_plan(INSTANCE_41, parse_plan(text)).correct


def test_pddl_without_a_goal_is_a_value_error():
    with pytest.raises(ValueError, match="PDDL problem lacks :goal"):
        parse_pddl("(define (problem p) (:objects a) (:init (handempty)))")
