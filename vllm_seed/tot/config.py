"""ToTConfig: one frozen, validated description of a ToT run."""

from __future__ import annotations

from dataclasses import dataclass, fields

from .client import APIS
from .registry import TASKS

THOUGHT_REQUESTS = ("single", "n")
_POSITIVE_INTS = (
    "num_problems", "concurrency", "num_thoughts", "max_steps", "max_states", "max_tokens",
)


@dataclass(frozen=True)
class ToTConfig:
    """A breadth-first ToT run against an OpenAI-compatible endpoint (paper defaults)."""

    endpoint: str = "http://127.0.0.1:8000"
    """Server root, e.g. http://127.0.0.1:8000 (a trailing /v1 is accepted)."""
    model: str | None = None
    """Served model name; None asks GET /v1/models for the first one."""
    task: str = "gsm8k"
    """One of TASKS: gsm8k, creative, blocksworld."""
    num_problems: int = 100
    """How many problems, taken in data order from `start`."""
    start: int = 0
    """Index of the first problem."""
    concurrency: int = 1
    """How many ToTs (problems) run at once."""
    num_thoughts: int = 3
    """Thoughts sampled per state and BFS step (the tree's branching factor)."""
    max_steps: int = 2
    """BFS depth: steps of thought generation + evaluation + selection."""
    max_states: int = 1
    """States kept after each step (beam width)."""
    temperature: float = 0.2
    """Sampling temperature of every request."""
    max_tokens: int = 100
    """Output token limit of every request (the paper's max_new_tokens)."""
    ignore_eos: bool = False
    """Every request generates exactly max_tokens (vLLM's `ignore_eos`; stop strings still
    stop it). For speed comparisons at temperature > 0: sampled lengths differ from config to
    config, and with them how many branches decode at once, which tokens/s depends on."""
    api: str = "completions"
    """completions (/v1/completions) or chat (/v1/chat/completions)."""
    thought_requests: str = "single"
    """single: one request with n=num_thoughts; n: num_thoughts requests with n=1."""
    seed: int | None = 0
    """Base sampling seed; request i of a thought fan-out in 'n' mode gets seed + i."""
    timeout_s: float = 600.0
    """Per-request HTTP timeout."""

    def __post_init__(self) -> None:
        for name in _POSITIVE_INTS:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if not isinstance(self.start, int) or self.start < 0:
            raise ValueError(f"start must be an integer >= 0, got {self.start!r}")
        if self.seed is not None and (not isinstance(self.seed, int) or self.seed < 0):
            raise ValueError(f"seed must be an integer >= 0 or None, got {self.seed!r}")
        if not isinstance(self.ignore_eos, bool):
            raise ValueError(f"ignore_eos must be true or false, got {self.ignore_eos!r}")
        if not self.temperature >= 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature!r}")
        if not self.timeout_s > 0:
            raise ValueError(f"timeout_s must be > 0, got {self.timeout_s!r}")
        _check_choice("task", self.task, sorted(TASKS))
        _check_choice("api", self.api, APIS)
        _check_choice("thought_requests", self.thought_requests, THOUGHT_REQUESTS)
        if not self.endpoint.startswith(("http://", "https://")):
            raise ValueError(f"endpoint must start with http:// or https://, got {self.endpoint!r}")

    @property
    def max_requests_in_flight(self) -> int:
        """Every ToT sends at most max_states * num_thoughts requests at once."""
        return self.concurrency * self.max_states * self.num_thoughts

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def _check_choice(name: str, value: str, choices) -> None:
    if value not in choices:
        raise ValueError(f"unknown {name} {value!r}; valid choices: {', '.join(choices)}")
