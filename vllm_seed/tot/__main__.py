"""`python -m vllm_seed.tot`: run the ToT BFS against an OpenAI-compatible server."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

from .client import APIS, PAIR_APIS, EndpointError
from .config import ToTConfig
from .registry import TASKS
from .runner import run_tot, summary_line

PROG = "python -m vllm_seed.tot"


def build_parser() -> argparse.ArgumentParser:
    d = ToTConfig()
    p = argparse.ArgumentParser(prog=PROG, description=__doc__,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--endpoint", default=d.endpoint, help="server root")
    p.add_argument("--model", default=None, help="served model; default: first in /v1/models")
    p.add_argument("--task", default=d.task, help=f"one of {', '.join(sorted(TASKS))}")
    p.add_argument("--num-problems", type=int, default=d.num_problems, help="problems to solve")
    p.add_argument("--start", type=int, default=d.start, help="index of the first problem")
    p.add_argument("--concurrency", type=int, default=d.concurrency, help="ToTs run at once")
    p.add_argument("--num-thoughts", type=int, default=d.num_thoughts,
                   help="thoughts sampled per state and step")
    p.add_argument("--max-steps", type=int, default=d.max_steps, help="BFS depth")
    p.add_argument("--max-states", type=int, default=d.max_states,
                   help="states kept per step (beam width)")
    p.add_argument("--temperature", type=float, default=d.temperature, help="of every request")
    p.add_argument("--max-tokens", type=int, default=d.max_tokens, help="of every request")
    p.add_argument("--ignore-eos", action="store_true",
                   help="every request generates exactly --max-tokens (fixed lengths, for speed "
                   "comparisons at temperature > 0)")
    p.add_argument("--pair", default=None, help=f"the repository's model pair the server runs "
                   f"({', '.join(PAIR_APIS)}): picks its API unless --api is given")
    p.add_argument("--api", default=None, help=f"one of {', '.join(APIS)} "
                   f"(default: the --pair's, else {d.api})")
    p.add_argument("--thought-requests", default=d.thought_requests,
                   help="single: one request with n=num_thoughts; n: num_thoughts requests")
    p.add_argument("--seed", type=int, default=d.seed, help="base sampling seed")
    p.add_argument("--timeout", type=float, default=d.timeout_s, help="seconds per request")
    p.add_argument("--output", default="result.json", help="JSON result path")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def config_from_args(args: argparse.Namespace) -> ToTConfig:
    return ToTConfig(
        endpoint=args.endpoint, model=args.model, task=args.task,
        num_problems=args.num_problems, start=args.start, concurrency=args.concurrency,
        num_thoughts=args.num_thoughts, max_steps=args.max_steps, max_states=args.max_states,
        temperature=args.temperature, max_tokens=args.max_tokens,
        ignore_eos=args.ignore_eos, api=_api(args),
        thought_requests=args.thought_requests, seed=args.seed, timeout_s=args.timeout,
    )


def _api(args: argparse.Namespace) -> str:
    if args.api is not None:
        return args.api
    if args.pair is None:
        return ToTConfig.api
    if args.pair not in PAIR_APIS:
        raise ValueError(f"unknown pair {args.pair!r}; valid choices: {', '.join(PAIR_APIS)}")
    return PAIR_APIS[args.pair]


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; bad input or an unreachable server gives one line on stderr and rc 2/1."""
    args = build_parser().parse_args(argv)
    output = Path(args.output)
    try:
        config = config_from_args(args)
        output.parent.mkdir(parents=True, exist_ok=True)  # fail before the run, not after it
        result = run_tot(config, progress=not args.quiet)
        output.write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n")
    except ValueError as e:
        return _fail(str(e), 2)
    except EndpointError as e:
        return _fail(str(e), 1)
    except OSError as e:
        return _fail(str(e), 1)  # str() names the file
    except KeyboardInterrupt:
        return _fail("interrupted", 130)
    print(summary_line(result))
    return 0


def _fail(message: str, code: int) -> int:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
