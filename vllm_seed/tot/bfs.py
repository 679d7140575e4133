"""Breadth-first Tree of Thoughts (the SEED paper's ToT, with the authors' driver bugs fixed).

Vocabulary. A *state* is the path of steps taken from the root `()`. At each BFS *step* every
non-terminal state of the *frontier* is expanded: the Thought Generator samples `num_thoughts`
*thoughts* from one prompt, the State Evaluator scores every *candidate* (parent + thought) with
its own prompt (GSM8K: an answer, then a 0-10 value; other tasks: a value), and the best
`max_states` candidates become the next frontier. A solution is generated from the best state.

Unlike the authors' `tot_search.py`, selected states really advance, every candidate keeps its
own value, and the solution is generated and scored.

Every request of one node carries `vllm_xargs={"seed_group": "<problem>/<step>/<state>/<phase>"}`,
where <state> indexes the expanded states of that step, so a server-side scheduler can group the
siblings; all requests of one phase are sent at once.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Sequence

from .client import Completion, OpenAIClient, Request
from .config import ToTConfig
from .parsing import parse_value
from .task import Problem, Prompt, Task


@dataclass(frozen=True)
class State:
    """A path from the root; `values[i]` is the State Evaluator's value of `steps[i]`."""

    steps: tuple[str, ...] = ()
    values: tuple[float, ...] = ()

    @property
    def value(self) -> float:
        return self.values[-1] if self.values else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"steps": list(self.steps), "values": list(self.values)}


@dataclass(frozen=True)
class Candidate:
    """A thought of expanded state `parent`, with its answer (GSM8K) and value."""

    parent: int
    thought: str
    answer: str | None
    state: State


class BreadthFirstSearch:
    """Solves one problem; `run()` returns its JSON record."""

    def __init__(self, task: Task, client: OpenAIClient, config: ToTConfig, problem: Problem):
        self.task = task
        self.client = client
        self.config = config
        self.problem = problem
        self._completions: list[Completion] = []

    def run(self) -> dict[str, Any]:
        start = time.perf_counter()
        frontier, log = [State()], []
        for step in range(1, self.config.max_steps + 1):
            expanded = [s for s in frontier if not self.task.is_terminal(s.steps)]
            if not expanded:
                break
            finished = [s for s in frontier if self.task.is_terminal(s.steps)]
            candidates = self._expand(step, expanded)
            if not candidates:  # the server sent no choices: keep the frontier we have
                break
            frontier, chosen = self._select([c.state for c in candidates] + finished)
            log.append(_step_record(step, expanded, candidates, chosen, frontier))
        best = frontier[0]
        solution = self._solve(best, step=len(log) + 1)
        score = self.task.score(self.problem, solution)
        return {
            "id": self.problem.id,
            "index": self.problem.index,
            "question": self.problem.question,
            "gold": self.problem.gold,
            "steps": log,
            "best_state": best.to_dict(),
            "solution": solution,
            "answer": score.answer,
            "correct": score.correct,
            "score": score.score,
            "num_requests": len(self._completions),
            "completion_tokens": sum(c.completion_tokens for c in self._completions),
            "wall_time_s": time.perf_counter() - start,
            "latencies_s": [c.latency_s for c in self._completions],
        }

    def _expand(self, step: int, states: Sequence[State]) -> list[Candidate]:
        thoughts = self._thoughts(step, states)
        answers: list[str | None] = [None] * len(thoughts)
        if self.task.has_answer_phase:
            answers = self._answers(step, states, thoughts)
        values = self._values(step, states, thoughts, answers)
        return [
            Candidate(parent, thought, answer, State(
                states[parent].steps + (self.task.new_step(thought, answer),),
                states[parent].values + (value,)))
            for (parent, thought), answer, value in zip(thoughts, answers, values)
        ]

    def _thoughts(self, step: int, states: Sequence[State]) -> list[tuple[int, str]]:
        # (parent, thought) pairs, parent-major, samples in the order the server gave them.
        k = self.config.num_thoughts
        requests, parents = [], []
        for i, state in enumerate(states):
            prompt = self.task.thought_prompt(self.problem, state.steps)
            if self.config.thought_requests == "single":
                fan_out = [self._request(prompt, (step, i, "thought"), n=k)]
            else:  # distinct seeds, or n identical requests would give n identical thoughts
                fan_out = [self._request(prompt, (step, i, "thought"), offset=j) for j in range(k)]
            requests += fan_out
            parents += [i] * len(fan_out)
        completions = self._send(requests)
        return [(parent, self.task.parse_thought(text))
                for parent, completion in zip(parents, completions) for text in completion.texts]

    def _answers(self, step: int, states: Sequence[State], thoughts) -> list[str | None]:
        requests = [
            self._request(self.task.answer_prompt(self.problem, states[p].steps, t),
                          (step, p, "answer"))
            for p, t in thoughts
        ]
        return [self.task.parse_answer(_first_text(c)) for c in self._send(requests)]

    def _values(self, step: int, states: Sequence[State], thoughts, answers) -> list[float]:
        requests = [
            self._request(self.task.value_prompt(self.problem, states[p].steps, t, a),
                          (step, p, "value"))
            for (p, t), a in zip(thoughts, answers)
        ]
        return [parse_value(_first_text(c)) for c in self._send(requests)]

    def _select(self, pool: list[State]) -> tuple[list[State], list[int]]:
        # Sorting is stable, so equal values keep pool (generation) order.
        chosen = sorted(range(len(pool)), key=lambda i: -pool[i].value)[: self.config.max_states]
        return [pool[i] for i in chosen], chosen

    def _solve(self, best: State, step: int) -> str:
        # Generated from `best`, or `best` itself when the task says it is complete.
        prompt = self.task.solution_prompt(self.problem, best.steps)
        generated = None
        if prompt is not None:
            (completion,) = self._send([self._request(prompt, (step, 0, "solution"))])
            generated = _first_text(completion)
        return self.task.final_solution(best.steps, generated)

    def _request(self, prompt: Prompt, node: tuple[int, int, str], n: int = 1,
                 offset: int = 0) -> Request:
        step, state, phase = node
        seed = None if self.config.seed is None else self.config.seed + offset
        group = f"{self.problem.id}/{step}/{state}/{phase}"
        return Request(prompt.text, n=n, stop=prompt.stop, seed=seed,
                       vllm_xargs={"seed_group": group})

    def _send(self, requests: list[Request]) -> list[Completion]:
        completions = self.client.complete_all(requests)
        self._completions.extend(completions)
        return completions


def _first_text(completion: Completion) -> str:
    return completion.texts[0] if completion.texts else ""


def _step_record(step: int, expanded: Sequence[State], candidates: Sequence[Candidate],
                 chosen: Sequence[int], frontier: Sequence[State]) -> dict[str, Any]:
    # Indices past the candidates in `chosen` are terminal states carried over unchanged.
    return {
        "step": step,
        "expanded": [s.to_dict() for s in expanded],
        "candidates": [
            {"parent": c.parent, "thought": c.thought, "answer": c.answer,
             "value": c.state.value, "selected": i in chosen}
            for i, c in enumerate(candidates)
        ],
        "frontier": [s.to_dict() for s in frontier],
    }
