"""Blocksworld (PlanBench instances, RAP / llm-reasoners split v1), prompted as llm-reasoners' ToT.

A thought is the next action, one line in text form ("pick up the red block") or "[PLAN END]",
which makes the state terminal. The final plan is the best state's actions plus the model's
continuation; it is correct when `plan_checker` finds it executable and reaching the goal.
The natural-language conventions are those of `data/blocksworld/README.md`.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from functools import cached_property

from .parsing import first_line
from .task import DATA_DIR, Problem, Prompt, Score, Task
from .plan_checker import (
    COLOURS, Atom, Instance, check_plan, parse_action, parse_pddl, parse_plan,
)

ROOT = DATA_DIR / "blocksworld"
SPLIT_STEPS = (2, 4, 6, 8, 10, 12)
NUM_SHOTS = 4
PLAN_END = "[PLAN END]"

STATEMENT = (
    "[STATEMENT]\nAs initial conditions I have that, {init}.\nMy goal is to have that {goal}."
    "\n\nMy plan is as follows:\n\n[PLAN]"
)
VALUE_QUESTION = (
    "Please evaluate whether the given action is a good one under certain conditions.\n\n"
    "[STATEMENT]\nAs initial conditions I have that, {init}.\nMy goal is to have that {goal}."
    "\n[PLAN SO FAR]\n{plan}\n[ACTION]\n{action}\n"
    "Please output a number between 0 and 10 to evaluate the action. "
    "A higher number means the action is more helpful for reaching the goal.\n"
)

_PHRASES = {
    "clear": "the {} block is clear",
    "handempty": "the hand is empty",
    "holding": "the hand is holding the {} block",
    "on": "the {} block is on top of the {} block",
    "ontable": "the {} block is on the table",
}


def describe(atoms: frozenset[Atom]) -> str:
    """Atoms in llm-reasoners order and phrasing, joined "a, b and c"."""
    ordered = sorted(atoms, key=lambda a: a[0] + " " + " ".join(a[1:]))
    phrases = [_PHRASES[a[0]].format(*(COLOURS[x] for x in a[1:])) for a in ordered]
    return phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + " and " + phrases[-1]


def statement(instance: Instance) -> str:
    """The problem statement exactly as llm-reasoners keeps it in `example["question"]`."""
    body = STATEMENT.format(init=describe(instance.init), goal=describe(instance.goal))
    return "\n" + body + "\n"


@dataclass(frozen=True)
class _Item:
    instance: Instance
    init: str  # describe(instance.init)
    goal: str
    shots: str  # intro + 4 pool examples, the fixed head of every prompt


class BlocksworldTask(Task):
    """Plan generation; correct = the plan is executable and reaches the goal."""

    name = "blocksworld"

    @cached_property
    def _items(self) -> list[list]:
        files = (ROOT / "llm-reasoners" / "split_v1" / f"split_v1_step_{k}_data.json"
                 for k in SPLIT_STEPS)
        return [item for f in files for item in json.loads(f.read_text(encoding="utf-8"))]

    @cached_property
    def _pool(self) -> dict:
        return json.loads((ROOT / "llm-reasoners" / "pool_prompt_v1.json").read_text("utf-8"))

    def num_items(self) -> int:
        return len(self._items)

    def load_item(self, index: int) -> Problem:
        path, gold_plan, _ = self._items[index]
        instance = parse_pddl((ROOT / path).read_text(encoding="utf-8"))
        item = _Item(instance, describe(instance.init), describe(instance.goal),
                     self._shots(index))
        return Problem(id=f"{self.name}-{index}", index=index, question=statement(instance),
                       gold=gold_plan, reference=item)

    def _shots(self, index: int) -> str:
        # llm-reasoners draws 4 pool examples per item at random; seeding by the index keeps a
        # problem's prompt identical across runs.
        examples = random.Random(index).sample(self._pool["example_pool"], NUM_SHOTS)
        texts = [STATEMENT.format(init=e["init"], goal=e["goal"]) + e["plan"] for e in examples]
        return self._pool["intro"] + "\n".join(texts)

    def thought_prompt(self, problem: Problem, steps: tuple[str, ...]) -> Prompt:
        return Prompt(self._plan_prompt(problem, steps), stop=("\n",))

    def parse_thought(self, text: str) -> str:
        line = first_line(text)
        if PLAN_END.lower() in line.lower():
            return PLAN_END
        action = parse_action(line)
        return action.text() if action is not None and action.is_known() else line

    def value_prompt(
        self, problem: Problem, steps: tuple[str, ...], thought: str, answer: str | None
    ) -> Prompt:
        item: _Item = problem.reference
        plan = "\n".join(steps) if steps else "(none)"
        question = VALUE_QUESTION.format(init=item.init, goal=item.goal, plan=plan, action=thought)
        return Prompt(self._pool["intro"] + question)

    def is_terminal(self, steps: tuple[str, ...]) -> bool:
        return bool(steps) and steps[-1] == PLAN_END

    def solution_prompt(self, problem: Problem, steps: tuple[str, ...]) -> Prompt | None:
        if self.is_terminal(steps):
            return None
        return Prompt(self._plan_prompt(problem, steps), stop=(PLAN_END,))

    def final_solution(self, steps: tuple[str, ...], generated: str | None) -> str:
        return "".join(step + "\n" for step in steps) + (generated or "")

    def score(self, problem: Problem, solution: str) -> Score:
        actions = parse_plan(solution)
        check = check_plan(problem.reference.instance, actions)
        answer = "".join(a.pddl() + "\n" for a in actions)
        return Score(answer=answer, correct=check.correct, score=float(check.correct))

    def _plan_prompt(self, problem: Problem, steps: tuple[str, ...]) -> str:
        item: _Item = problem.reference
        head = STATEMENT.format(init=item.init, goal=item.goal)
        return item.shots + "\n" + head + "\n" + "".join(step + "\n" for step in steps)
