"""Tree-of-Thoughts driver: a breadth-first ToT over an OpenAI-compatible endpoint.

Stdlib only (plus tqdm for the progress bar); it never imports vLLM or torch, so it can drive
any server. `run_tot(ToTConfig(...))` is what benchmarks call; `python -m vllm_seed.tot` is the CLI.
Vocabulary (state, step, frontier, thought, candidate) is defined in `bfs.py`.
"""

from .client import EndpointError
from .config import ToTConfig
from .runner import run_tot

__all__ = ["EndpointError", "ToTConfig", "run_tot"]
