"""The main job: a Tree-of-Thoughts run against a SEED server.

Starts `vllm serve TARGET --speculative-plugin seed ...` on a model pair (default: the
SmolLM2-135M-Instruct target that `make install` builds, with its distilled draft; `--pair
tiny`: the embedded GSM8K pair), runs the ToT driver on GSM8K questions (siblings sent at once,
tagged with seed_group), prints the result, the spec-decode acceptance and SEED's own metrics,
and stops the server.

    python benchmarks/demo_tot.py [--pair smollm2|tiny] [--pair-dir DIR] [--num-problems 2]
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import tempfile
import urllib.request

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from _servers import (PAIRS, Fleet, Server, ServerConfig, free_port, pair_from_args,  # noqa: E402
                      server_argv)

from vllm_seed.tot import ToTConfig, run_tot  # noqa: E402



def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pair", default="smollm2", choices=sorted(PAIRS), help="model pair")
    p.add_argument("--pair-dir", type=pathlib.Path, default=None,
                   help="directory with target/ and draft/ (default: the pair's own)")
    p.add_argument("--task", default="gsm8k")
    p.add_argument("--num-problems", type=int, default=2)
    p.add_argument("--temperature", type=float, default=0.2)
    p.add_argument("--num-drafters", type=int, default=2)
    p.add_argument("--num-speculative-tokens", type=int, default=3)
    p.add_argument("--output", type=pathlib.Path, default=None)
    args = p.parse_args()
    args.pair = pair_from_args(args.pair, args.pair_dir)
    return args


def seed_metrics(url: str) -> list[str]:
    with urllib.request.urlopen(url + "/metrics", timeout=10) as r:
        text = r.read().decode()
    wanted = ("vllm_seed:", "vllm:spec_decode_num_")
    return [line for line in text.splitlines() if line.startswith(wanted) and "_created" not in line]


def demo_config(args) -> ServerConfig:
    return ServerConfig(
        "seed", speculative={"num_speculative_tokens": args.num_speculative_tokens},
        seed={"num_drafters": args.num_drafters},
    )


def demo_argv(config: ServerConfig, args, port: int) -> list[str]:
    # A token budget no ToT batch exceeds (prefills unchunked), as in the benchmark.
    return server_argv(config, args.pair.dir, port, extra=("--max-num-batched-tokens", "16384"))


def main() -> int:
    args = parse_args()
    args.pair.check()
    port = free_port()
    log = pathlib.Path(tempfile.mkdtemp(prefix="vllm-seed-demo-")) / "server.log"
    config = demo_config(args)
    server = Server(config, demo_argv(config, args, port), log, port)
    print(f"[demo] starting: {' '.join(server.argv)}\n[demo] server log: {log}", file=sys.stderr)
    with Fleet([server], startup_timeout_s=600) as fleet:
        fleet.wait_ready()
        if server.error:
            return 1
        result = run_tot(ToTConfig(
            task=args.task, endpoint=server.url, num_problems=args.num_problems,
            temperature=args.temperature, num_thoughts=3, max_steps=2, max_states=1,
            max_tokens=100, seed=0, api=args.pair.api,
        ))
        metrics = seed_metrics(server.url)
    if args.output:
        import json

        args.output.write_text(json.dumps(result, indent=1))
    print(f"[demo] pair {args.pair.name} ({args.pair.dir}), ToT {args.task}: {result['num_problems']} problems, accuracy {result['accuracy']:.2f}, "
          f"{result['completion_tokens']} tokens in {result['wall_time_s']:.1f} s "
          f"({result['output_tokens_per_s']:.1f} tok/s), {result['num_requests']} requests")
    print("\n".join(metrics))
    return 0


if __name__ == "__main__":
    sys.exit(main())
