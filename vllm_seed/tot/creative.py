"""Creative Writing from Tree of Thoughts (princeton-nlp/tree-of-thought-llm, `prompts/text.py`).

Input: 4 sentences. Step 1's thought is a plan (cut at "\\nPassage:\\n", ToT's stop), step 2's
is the passage written from that plan; a state with a passage is terminal. ToT judged
coherency with GPT-4; we score a checkable objective instead: the fraction of the required
sentences that end a paragraph of the final passage (whitespace-normalised exact match).

The input lines are split at sentence punctuation; five of the 100 lines hold a fragment without
a full stop ("Instead of a bachelorette party You realize ..."), which then stays joined to the
next sentence, so those lines require 3 sentences.
"""

from __future__ import annotations

import re
from functools import cached_property

from .parsing import normalise_space
from .task import DATA_DIR, Problem, Prompt, Score, Task

INSTRUCTION = (
    "Write a coherent passage of 4 short paragraphs. "
    "The end sentence of each paragraph must be: {input}"
)

COT_PROMPT = """
{instruction}

Make a plan then write. Your output should be of the following format:

Plan:
Your plan here.

Passage:
Your passage here.
"""

VALUE_PROMPT = """Given an instruction: ##{instruction}##, the candidate {kind} is: ##{candidate}##
Please output a number between 0 and 10 to evaluate the {kind}. A higher number means a more coherent {kind} that follows the instruction more faithfully.
"""

PASSAGE_MARK = "Passage:"
_PLAN_STOP = "\nPassage:\n"
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|(?<=[.!?][\"'”’])\s+")


def required_sentences(line: str) -> tuple[str, ...]:
    """The sentences of one input line, whitespace-normalised."""
    parts = _SENTENCE_END.split(line.strip())
    return tuple(normalise_space(p) for p in parts if p.strip())


def passage_of(text: str) -> str:
    """The text after the last "Passage:" (ToT's rule), or all of it."""
    return text.split(PASSAGE_MARK)[-1]


def paragraphs(passage: str) -> list[str]:
    """Non-blank lines, whitespace-normalised: models separate paragraphs by newlines."""
    return [normalise_space(line) for line in passage.splitlines() if line.strip()]


def sentences_ending_paragraphs(passage: str, sentences: tuple[str, ...]) -> int:
    """How many of `sentences` end some paragraph of `passage` (as a whole sentence)."""
    ends = paragraphs(passage)
    return sum(any(p == s or p.endswith(" " + s) for p in ends) for s in sentences)


class CreativeTask(Task):
    """Write 4 paragraphs ending in the 4 given sentences; correct = all of them end one."""

    name = "creative"

    def __init__(self, file: str = "data_100_random_text.txt"):
        self.path = DATA_DIR / "tot" / file

    @cached_property
    def _lines(self) -> list[str]:
        return [line for line in self.path.read_text(encoding="utf-8").splitlines() if line]

    def num_items(self) -> int:
        return len(self._lines)

    def load_item(self, index: int) -> Problem:
        line = self._lines[index].strip()
        return Problem(
            id=f"{self.name}-{index}",
            index=index,
            question=line,
            gold=line,
            reference=required_sentences(line),
        )

    def thought_prompt(self, problem: Problem, steps: tuple[str, ...]) -> Prompt:
        if not steps:
            return Prompt(self._cot(problem), stop=(_PLAN_STOP,))
        return self._passage_prompt(problem, steps[0])

    def value_prompt(
        self, problem: Problem, steps: tuple[str, ...], thought: str, answer: str | None
    ) -> Prompt:
        kind = "plan" if not steps else "passage"
        instruction = INSTRUCTION.format(input=problem.question)
        text = VALUE_PROMPT.format(instruction=instruction, kind=kind, candidate=thought)
        return Prompt(text)

    def is_terminal(self, steps: tuple[str, ...]) -> bool:
        return len(steps) >= 2

    def solution_prompt(self, problem: Problem, steps: tuple[str, ...]) -> Prompt | None:
        if self.is_terminal(steps):
            return None
        return self._passage_prompt(problem, steps[0] if steps else "")

    def final_solution(self, steps: tuple[str, ...], generated: str | None) -> str:
        return generated if generated is not None else steps[-1]

    def score(self, problem: Problem, solution: str) -> Score:
        sentences = problem.reference
        hits = sentences_ending_paragraphs(passage_of(solution), sentences)
        fraction = hits / len(sentences) if sentences else 0.0
        return Score(answer=f"{hits}/{len(sentences)}", correct=fraction == 1.0, score=fraction)

    def _cot(self, problem: Problem) -> str:
        return COT_PROMPT.format(instruction=INSTRUCTION.format(input=problem.question))

    def _passage_prompt(self, problem: Problem, plan: str) -> Prompt:
        return Prompt(self._cot(problem) + plan + _PLAN_STOP)
