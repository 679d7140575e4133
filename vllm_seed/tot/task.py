"""The one interface the BFS sees: a `Task` turns states into prompts and scores solutions.

A *state* is the tuple of steps taken so far (the root is `()`); a *thought* is one sampled
continuation; the new state is `state + (task.new_step(thought, answer),)`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

DATA_DIR = Path(__file__).resolve().parent / "data"


@dataclass(frozen=True)
class Problem:
    """One benchmark item. `reference` is task-private scoring data and is not serialised."""

    id: str
    index: int
    question: str
    gold: str
    reference: Any = None


@dataclass(frozen=True)
class Prompt:
    """A prompt and the stop strings that end its completion."""

    text: str
    stop: tuple[str, ...] = ()


@dataclass(frozen=True)
class Score:
    """`answer`: the short extracted answer; `score`: in [0, 1]; `correct`: counts for accuracy."""

    answer: str
    correct: bool
    score: float


class Task(ABC):
    """Base class of the tasks; subclasses set `name` and implement the abstract methods.

    `has_answer_phase`: the State Evaluator first asks for an answer (GSM8K), then a value.
    """

    name: ClassVar[str] = ""
    has_answer_phase: ClassVar[bool] = False

    @abstractmethod
    def num_items(self) -> int:
        """How many problems the task's data holds."""

    @abstractmethod
    def load_item(self, index: int) -> Problem:
        ...

    def load(self, start: int, num: int) -> list[Problem]:
        """Problems `start .. start + num - 1`; a range past the data is a ValueError."""
        size = self.num_items()
        if start + num > size:
            raise ValueError(
                f"start {start} + num_problems {num} exceeds the {size} {self.name} problems"
            )
        return [self.load_item(i) for i in range(start, start + num)]

    @abstractmethod
    def thought_prompt(self, problem: Problem, steps: tuple[str, ...]) -> Prompt:
        ...

    def parse_thought(self, text: str) -> str:
        return text.strip()

    def answer_prompt(self, problem: Problem, steps: tuple[str, ...], thought: str) -> Prompt:
        raise NotImplementedError(f"task {self.name} has no answer phase")

    def parse_answer(self, text: str) -> str:
        return text.strip()

    @abstractmethod
    def value_prompt(
        self, problem: Problem, steps: tuple[str, ...], thought: str, answer: str | None
    ) -> Prompt:
        ...

    def new_step(self, thought: str, answer: str | None) -> str:
        return thought

    def is_terminal(self, steps: tuple[str, ...]) -> bool:
        """A terminal state is not expanded again; it competes with its old value."""
        return False

    @abstractmethod
    def solution_prompt(self, problem: Problem, steps: tuple[str, ...]) -> Prompt | None:
        """None: the state is already a full solution and needs no final request."""

    def final_solution(self, steps: tuple[str, ...], generated: str | None) -> str:
        return generated or ""

    @abstractmethod
    def score(self, problem: Problem, solution: str) -> Score:
        ...
