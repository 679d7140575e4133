"""GSM8K with the SEED authors' 0-shot prompts (Linking-ai/SEED `src/prompts.py`).

A thought is the next sub-question (cut after its first "?", as the authors do); the State
Evaluator answers it (last number of the reply) and then scores it 0-10. A step is stored as
"<sub-question>##<answer>", the authors' format, and steps are joined by newlines.
"""

from __future__ import annotations

import json
import re
from functools import cached_property

from .parsing import format_number, last_number
from .task import DATA_DIR, Problem, Prompt, Score, Task

THOUGHT_PROMPT = """Given a [question]: ##{question}##, the previous sub-question and sub-answer is: ##{state}##
Please output the next sub-question to further reason the [question]."""

ANSWER_PROMPT = """Given a [question]: ##{question}##, the sub-question is: ##{sub_question}##
Please answer the sub-question based on the [question]."""

EVALUATE_PROMPT = """Given a [question]: ##{question}##, the sub-question is: ##{sub_question}##, the answer is: ##{answer}##
Please output a number between 0 and 10 to evaluate the answer. The higher number represent more helpful for answer [question].
"""

SOLUTION_PROMPT = """Given a [question]: ##{question}##, the previous sub-question and sub-answer is: ##{state}##
Please output the answer of the [question]."""

_UP_TO_QUESTION_MARK = re.compile(r"[^?]*\?")
_GOLD_MARK = "#### "


def gold_number(answer: str) -> str:
    """The gold number after "#### ", without commas or "$" ("1,600" -> "1600")."""
    return answer.split(_GOLD_MARK)[-1].strip().replace(",", "").replace("$", "")


def numbers_equal(predicted: float | None, gold: str) -> bool:
    """Numeric comparison, so "18.0" matches a gold of "18"."""
    try:
        return predicted is not None and abs(predicted - float(gold)) < 1e-6
    except ValueError:
        return False


class Gsm8kTask(Task):
    """Grade-school maths word problems; accuracy = final number == gold number."""

    name = "gsm8k"
    has_answer_phase = True

    def __init__(self, split: str = "test"):
        self.path = DATA_DIR / "gsm8k" / f"{split}.jsonl"

    @cached_property
    def _lines(self) -> list[str]:
        return self.path.read_text(encoding="utf-8").splitlines()

    def num_items(self) -> int:
        return len(self._lines)

    def load_item(self, index: int) -> Problem:
        item = json.loads(self._lines[index])
        return Problem(
            id=f"{self.name}-{index}",
            index=index,
            question=item["question"],
            gold=gold_number(item["answer"]),
        )

    def thought_prompt(self, problem: Problem, steps: tuple[str, ...]) -> Prompt:
        return Prompt(THOUGHT_PROMPT.format(question=problem.question, state="\n".join(steps)))

    def parse_thought(self, text: str) -> str:
        match = _UP_TO_QUESTION_MARK.search(text)
        return (match.group(0) if match else text).strip()

    def answer_prompt(self, problem: Problem, steps: tuple[str, ...], thought: str) -> Prompt:
        return Prompt(ANSWER_PROMPT.format(question=problem.question, sub_question=thought))

    def parse_answer(self, text: str) -> str:
        return format_number(last_number(text))

    def value_prompt(
        self, problem: Problem, steps: tuple[str, ...], thought: str, answer: str | None
    ) -> Prompt:
        text = EVALUATE_PROMPT.format(
            question=problem.question, sub_question=self.new_step(thought, answer), answer=answer
        )
        return Prompt(text)

    def new_step(self, thought: str, answer: str | None) -> str:
        return f"{thought}##{answer}"

    def solution_prompt(self, problem: Problem, steps: tuple[str, ...]) -> Prompt:
        return Prompt(SOLUTION_PROMPT.format(question=problem.question, state="\n".join(steps)))

    def score(self, problem: Problem, solution: str) -> Score:
        predicted = last_number(solution)
        correct = numbers_equal(predicted, problem.gold)
        return Score(answer=format_number(predicted), correct=correct, score=float(correct))
