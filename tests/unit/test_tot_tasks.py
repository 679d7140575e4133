"""Task prompts, answer extraction and accuracy scoring for gsm8k, creative and blocksworld."""

from __future__ import annotations

import json
import random

import pytest

from vllm_seed.tot.parsing import format_number, last_number, numbers, parse_value
from vllm_seed.tot.registry import TASKS, make_task
from vllm_seed.tot.blocksworld import ROOT, BlocksworldTask, describe, statement
from vllm_seed.tot.creative import CreativeTask, required_sentences
from vllm_seed.tot.gsm8k import Gsm8kTask, gold_number


@pytest.mark.parametrize("text, expected", [
    ("$1,234.50 and 7", [1234.5, 7.0]),
    ("from 3-4 items", [3.0, 4.0]),
    ("it was -10 degrees, x=-3.", [-10.0, -3.0]),
    ("lists 1,2,3", [1.0, 2.0, 3.0]),
    ("no digits", []),
])
def test_numbers(text, expected):
    assert numbers(text) == expected


@pytest.mark.parametrize("text, value", [
    ("Score: 8", 8.0), ("15 is too high, so 6", 6.0), ("7.5/10", 7.5), ("10", 10.0),
    ("-3 then 4", 4.0), ("nothing", 0.0), ("", 0.0), ("100 200", 0.0),
])
def test_parse_value_is_first_number_in_0_to_10(text, value):
    assert parse_value(text) == value


def test_format_and_last_number():
    assert [format_number(last_number(t)) for t in ("is 18.", "2.50 each", "none here")] == [
        "18", "2.5", "none"]


def test_gsm8k_gold_and_accuracy():
    task = Gsm8kTask()
    assert task.num_items() == 1319
    assert task.load_item(0).gold == "18"
    golds = {task.load_item(i).gold for i in range(task.num_items())}
    assert {"1600", "-10", "1450000"} <= golds
    assert gold_number("so $1,600.\n#### 1,600") == "1600"
    problem = task.load_item(0)
    cases = {
        "She makes $18 every day.": ("18", True),
        "16 - 3 - 4 = 9, 9 * 2 = 18.0": ("18", True),
        "The answer is 16.": ("16", False),
        "I don't know": ("none", False),
    }
    for solution, (answer, correct) in cases.items():
        score = task.score(problem, solution)
        assert (score.answer, score.correct, score.score) == (answer, correct, float(correct))


def test_gsm8k_prompts_are_the_seed_authors():
    task = Gsm8kTask()
    problem = task.load_item(0)
    q = problem.question
    assert task.thought_prompt(problem, ("A?##1", "B?##2")).text == (
        f"Given a [question]: ##{q}##, the previous sub-question and sub-answer is: ##A?##1\n"
        "B?##2##\nPlease output the next sub-question to further reason the [question].")
    assert task.answer_prompt(problem, (), "C?").text == (
        f"Given a [question]: ##{q}##, the sub-question is: ##C?##\n"
        "Please answer the sub-question based on the [question].")
    assert task.value_prompt(problem, (), "C?", "7").text == (
        f"Given a [question]: ##{q}##, the sub-question is: ##C?##7##, the answer is: ##7##\n"
        "Please output a number between 0 and 10 to evaluate the answer. The higher number "
        "represent more helpful for answer [question].\n")
    assert task.solution_prompt(problem, ("A?##1",)).text == (
        f"Given a [question]: ##{q}##, the previous sub-question and sub-answer is: ##A?##1##\n"
        "Please output the answer of the [question].")
    assert task.new_step("C?", "7") == "C?##7"


def test_creative_prompts_plan_then_passage():
    task = CreativeTask()
    problem = task.load_item(0)
    plan_prompt = task.thought_prompt(problem, ())
    assert plan_prompt.text == (
        "\nWrite a coherent passage of 4 short paragraphs. The end sentence of each paragraph "
        f"must be: {problem.question}\n\nMake a plan then write. Your output should be of the "
        "following format:\n\nPlan:\nYour plan here.\n\nPassage:\nYour passage here.\n")
    assert plan_prompt.stop == ("\nPassage:\n",)
    passage_prompt = task.thought_prompt(problem, ("Plan:\nP.",))
    assert (passage_prompt.text, passage_prompt.stop) == (
        plan_prompt.text + "Plan:\nP.\nPassage:\n", ())
    assert task.solution_prompt(problem, ("Plan:\nP.",)) == passage_prompt
    assert task.solution_prompt(problem, ("Plan:\nP.", "Text.")) is None
    assert "candidate passage is: ##Text.##" in task.value_prompt(
        problem, ("Plan:\nP.",), "Text.", None).text


def test_gsm8k_thought_is_cut_after_the_first_question_mark():
    task = Gsm8kTask()
    assert task.parse_thought(" How many eggs? She has 16. Why? ") == "How many eggs?"
    assert task.parse_thought("no question mark ") == "no question mark"


def test_creative_required_sentences():
    task = CreativeTask()
    assert task.num_items() == 100
    assert task.load_item(0).reference == (
        "It isn't difficult to do a handstand if you just stand on your hands.",
        "It caught him off guard that space smelled of seared steak.",
        "When she didn’t like a guy who was trying to pick her up, she started using sign "
        "language.",
        "Each person who knows you has a different perception of who you are.",
    )
    counts = [len(task.load_item(i).reference) for i in range(100)]
    # Lines 5, 28, 49, 59 and 81 hold a fragment without a full stop.
    assert [i for i, n in enumerate(counts) if n != 4] == [5, 28, 49, 59, 81]
    assert {counts[i] for i in (5, 28, 49, 59, 81)} == {3}
    assert required_sentences('He said "no." Then left!  Why?') == (
        'He said "no."', "Then left!", "Why?")


def test_creative_score_counts_sentences_that_end_paragraphs():
    task = CreativeTask()
    problem = task.load_item(0)
    s = problem.reference
    full = "\n\n".join(f"Intro {i}.  {x}" for i, x in enumerate(s))
    spaced = "\n".join(f"Intro.\t{x.replace(' ', '   ')}  " for x in s)
    three = "\n\n".join([f"A. {s[0]}", f"B. {s[1]}", f"C. {s[2]}", f"{s[3]} Then more."])
    plan_only = f"Plan:\n{chr(10).join(s)}\nPassage:\nNothing here."
    cases = {full: ("4/4", 1.0, True), spaced: ("4/4", 1.0, True),
             three: ("3/4", 0.75, False), plan_only: ("0/4", 0.0, False), "": ("0/4", 0.0, False)}
    for solution, expected in cases.items():
        score = task.score(problem, solution)
        assert (score.answer, score.score, score.correct) == expected


def test_blocksworld_statement_matches_the_data_readme():
    task = BlocksworldTask()
    assert task.num_items() == 590
    problem = task.load_item(0)
    assert problem.question == (
        "\n[STATEMENT]\nAs initial conditions I have that, the blue block is clear, the yellow "
        "block is clear, the hand is empty, the blue block is on top of the orange block, the "
        "orange block is on top of the red block, the red block is on the table and the yellow "
        "block is on the table.\nMy goal is to have that the blue block is on top of the yellow "
        "block and the orange block is on top of the red block.\n\nMy plan is as follows:\n\n"
        "[PLAN]\n")
    assert problem.gold == "(unstack b c)\n(stack b d)\n"
    assert statement(problem.reference.instance) == problem.question


def test_blocksworld_prompt_is_intro_four_pool_examples_then_the_problem():
    task = BlocksworldTask()
    problem = task.load_item(0)
    pool = json.loads((ROOT / "llm-reasoners" / "pool_prompt_v1.json").read_text())
    step = "unstack the blue block from on top of the orange block"
    prompt = task.thought_prompt(problem, (step,))
    assert prompt.stop == ("\n",)
    assert prompt.text.startswith(pool["intro"] + "[STATEMENT]\n")
    assert prompt.text.endswith(problem.question.lstrip("\n") + step + "\n")
    used = [e for e in pool["example_pool"] if e["plan"] + "\n[STATEMENT]" in prompt.text]
    assert len(used) == 4
    # A fresh task draws the same examples: a problem's prompt never changes between runs.
    assert BlocksworldTask().thought_prompt(problem, ()) == task.thought_prompt(problem, ())


def test_blocksworld_describe_single_goal_atom():
    assert describe(frozenset({("on", "a", "b")})) == "the red block is on top of the blue block"


def test_blocksworld_thoughts_and_scoring():
    task = BlocksworldTask()
    problem = task.load_item(0)
    assert task.parse_thought("\n(unstack b c)\nmore") == (
        "unstack the blue block from on top of the orange block")
    assert task.parse_thought("  [plan end] ") == "[PLAN END]"
    assert task.parse_thought("fly away") == "fly away"
    steps = ("unstack the blue block from on top of the orange block",)
    solution = task.final_solution(steps, "stack the blue block on top of the yellow block\n")
    score = task.score(problem, solution)
    assert (score.answer, score.correct) == ("(unstack b c)\n(stack b d)\n", True)
    assert task.score(problem, task.final_solution(steps, "")).correct is False
    assert task.solution_prompt(problem, steps + ("[PLAN END]",)) is None


def test_registry_and_unknown_task():
    assert sorted(TASKS) == ["blocksworld", "creative", "gsm8k"]
    with pytest.raises(ValueError, match=r"^unknown task 'foo'; valid choices: blocksworld, "
                                         r"creative, gsm8k$"):
        make_task("foo")


def test_load_past_the_data_is_a_value_error():
    with pytest.raises(ValueError, match=r"^start 589 \+ num_problems 2 exceeds the 590 "
                                         r"blocksworld problems$"):
        BlocksworldTask().load(589, 2)


def test_parsers_never_raise_on_garbage():
    rng = random.Random(0)
    alphabet = list("0123456789?.,$-()[]#\n\t abcz") + [
        "Passage:", "[PLAN END]", "red block", "stack", "unstack", "pick up", "10", "é", "\x00"]
    texts = ["".join(rng.choices(alphabet, k=rng.randrange(0, 40))) for _ in range(300)]
    tasks = [make_task(name) for name in sorted(TASKS)]
    problems = [t.load_item(0) for t in tasks]
    for text in texts:
        assert 0.0 <= parse_value(text) <= 10.0
        for task, problem in zip(tasks, problems):
            assert isinstance(task.parse_thought(text), str)
            assert isinstance(task.parse_answer(text), str)
            score = task.score(problem, task.final_solution(("x",), text))
            assert 0.0 <= score.score <= 1.0
