"""Blocksworld plan checking without VAL: parse the PDDL problem, simulate the 4 STRIPS operators.

A state is the frozenset of true ground atoms, e.g. `("on", "b", "c")`, `("handempty",)`.
Actions are read from PDDL (`(unstack b c)`) or from llm-reasoners' text form ("unstack the blue
block from on top of the orange block"); see `data/blocksworld/README.md`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable

Atom = tuple[str, ...]

# Letters a-l as bw_config.yaml names them; instances here use a-e.
COLOURS = dict(zip("abcdefghijkl", (
    "red", "blue", "orange", "yellow", "white", "magenta",
    "black", "cyan", "green", "violet", "silver", "gold",
)))
_LETTER_OF = {colour: letter for letter, colour in COLOURS.items()}


@dataclass(frozen=True)
class Operator:
    """A STRIPS operator over parameters ("x",) or ("x", "y")."""

    params: tuple[str, ...]
    pre: tuple[Atom, ...]
    delete: tuple[Atom, ...]
    add: tuple[Atom, ...]
    text: str  # the bw_config.yaml sentence template

    def ground(self, atoms: tuple[Atom, ...], args: tuple[str, ...]) -> frozenset[Atom]:
        binding = dict(zip(self.params, args))
        return frozenset((a[0], *(binding[p] for p in a[1:])) for a in atoms)


_HAND, _X, _Y = ("handempty",), "x", "y"
OPERATORS = {
    "pick-up": Operator(
        (_X,), pre=(("clear", _X), ("ontable", _X), _HAND),
        delete=(("clear", _X), ("ontable", _X), _HAND), add=(("holding", _X),),
        text="pick up the {x} block"),
    "put-down": Operator(
        (_X,), pre=(("holding", _X),), delete=(("holding", _X),),
        add=(("clear", _X), ("ontable", _X), _HAND), text="put down the {x} block"),
    "stack": Operator(
        (_X, _Y), pre=(("holding", _X), ("clear", _Y)), delete=(("holding", _X), ("clear", _Y)),
        add=(("on", _X, _Y), ("clear", _X), _HAND),
        text="stack the {x} block on top of the {y} block"),
    "unstack": Operator(
        (_X, _Y), pre=(("on", _X, _Y), ("clear", _X), _HAND),
        delete=(("on", _X, _Y), ("clear", _X), _HAND), add=(("holding", _X), ("clear", _Y)),
        text="unstack the {x} block from on top of the {y} block"),
}


@dataclass(frozen=True)
class Instance:
    """A Blocksworld problem: its objects, initial state and goal atoms."""

    objects: tuple[str, ...]
    init: frozenset[Atom]
    goal: frozenset[Atom]


@dataclass(frozen=True)
class Action:
    """A ground action such as `Action("unstack", ("b", "c"))`."""

    name: str
    args: tuple[str, ...]

    def pddl(self) -> str:
        return "(" + " ".join((self.name, *self.args)) + ")"

    def is_known(self) -> bool:
        """A known operator with its arity over named blocks, so `text()` can render it."""
        operator = OPERATORS.get(self.name)
        return (operator is not None and len(self.args) == len(operator.params)
                and all(a in COLOURS for a in self.args))

    def text(self) -> str:
        """The llm-reasoners sentence; needs `is_known()`."""
        operator = OPERATORS[self.name]
        return operator.text.format(**{p: COLOURS[a] for p, a in zip(operator.params, self.args)})


@dataclass(frozen=True)
class PlanCheck:
    """`failed_at`: index of the first inapplicable action (None if all apply)."""

    executable: bool
    reaches_goal: bool
    failed_at: int | None
    reason: str

    @property
    def correct(self) -> bool:
        return self.executable and self.reaches_goal


def _sexpr(text: str) -> list:
    """Nested lists from a PDDL string (`;` comments dropped)."""
    tokens = re.findall(r"[()]|[^\s()]+", re.sub(r";[^\n]*", "", text).lower())
    stack: list[list] = [[]]
    for token in tokens:
        if token == "(":
            stack.append([])
        elif token == ")" and len(stack) > 1:
            done = stack.pop()
            stack[-1].append(done)
        elif token != ")":
            stack[-1].append(token)
    return stack[0]


def parse_pddl(text: str) -> Instance:
    """Objects, init and goal of a STRIPS problem; a missing section is a ValueError."""
    defines = [e for e in _sexpr(text) if isinstance(e, list) and e[:1] == ["define"]]
    body = defines[0] if defines else []
    sections = {e[0]: e[1:] for e in body if isinstance(e, list) and e and isinstance(e[0], str)}
    missing = [k for k in (":objects", ":init", ":goal") if k not in sections]
    if missing:
        raise ValueError(f"PDDL problem lacks {', '.join(missing)}")
    goal = sections[":goal"][0] if sections[":goal"] else []
    goal_atoms = goal[1:] if goal[:1] == ["and"] else [goal] if goal else []
    return Instance(
        objects=tuple(sections[":objects"]),
        init=frozenset(tuple(a) for a in sections[":init"]),
        goal=frozenset(tuple(a) for a in goal_atoms),
    )


def check_plan(instance: Instance, actions: Iterable[Action]) -> PlanCheck:
    """Simulate `actions` from `instance.init`; correct iff all apply and the goal then holds."""
    state = instance.init
    for i, action in enumerate(actions):
        operator = OPERATORS.get(action.name)
        if operator is None:
            return PlanCheck(False, False, i, f"unknown action {action.pddl()}")
        if len(action.args) != len(operator.params):
            return PlanCheck(False, False, i, f"wrong number of arguments in {action.pddl()}")
        unknown = [a for a in action.args if a not in instance.objects]
        if unknown:
            return PlanCheck(False, False, i, f"unknown object {unknown[0]} in {action.pddl()}")
        unmet = operator.ground(operator.pre, action.args) - state
        if unmet:
            atom = "(" + " ".join(sorted(unmet)[0]) + ")"
            return PlanCheck(False, False, i, f"{action.pddl()} needs {atom}")
        state = (state - operator.ground(operator.delete, action.args)) | operator.ground(
            operator.add, action.args)
    missing = instance.goal - state
    reason = "goal reached" if not missing else f"goal atom ({' '.join(sorted(missing)[0])}) unmet"
    return PlanCheck(True, not missing, None, reason)


_PDDL_ACTION = re.compile(r"\(\s*([^()\s]+)((?:\s+[^()\s]+)*)\s*\)")
_COLOUR_BLOCK = re.compile(r"\b(" + "|".join(COLOURS.values()) + r")\s+block\b")
_WORD = re.compile(r"[a-z]+(?:-[a-z]+)?")
_END_MARKS = ("[plan end]", "[cost]")


def parse_action(line: str) -> Action | None:
    """One action from a PDDL or text line; None when the line holds no action."""
    lowered = line.lower()
    pddl = _PDDL_ACTION.search(lowered)
    if pddl:
        return Action(pddl.group(1), tuple(pddl.group(2).split()))
    words = _WORD.findall(lowered.replace("pick up", "pick-up").replace("put down", "put-down"))
    name = next((op for op in OPERATORS if op in words), None)
    colours = list(dict.fromkeys(_COLOUR_BLOCK.findall(lowered)))
    if name is None or len(colours) != len(OPERATORS[name].params):
        return None  # llm-reasoners drops such lines silently
    return Action(name, tuple(_LETTER_OF[c] for c in colours))


def parse_plan(text: str) -> tuple[Action, ...]:
    """The actions of a plan text, up to "[PLAN END]" or "[COST]"; other lines are skipped."""
    actions = []
    for line in str(text).splitlines():
        if any(mark in line.lower() for mark in _END_MARKS):
            break
        action = parse_action(line)
        if action is not None:
            actions.append(action)
    return tuple(actions)
