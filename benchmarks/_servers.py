"""The servers under test: configs as data, `vllm serve` argv, and a fleet that starts them all,
health-checks them, samples their memory and always shuts them down.

Each server runs in its own session (process group); shutdown is SIGINT to the group, then
SIGKILL to the group and to every descendant seen (Ray daemons may leave the group).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, replace
from pathlib import Path

import psutil

from vllm_seed.config import machine_cores
from vllm_seed.tot.client import PAIR_APIS

VLLM = str(Path(sys.executable).with_name("vllm"))
MODELS = Path(__file__).resolve().parent / "models"


@dataclass(frozen=True)
class Pair:
    """A target/draft pair: `dir` holds target/ and draft/; `api` is how the ToT driver prompts
    the target (an instruction-tuned model gets its chat template); `missing` says how to get
    a directory that is not there."""

    name: str
    dir: Path
    api: str
    missing: str

    def check(self) -> None:
        """Exit with an actionable message when a model directory is missing."""
        for sub in ("target", "draft"):
            if not (self.dir / sub / "config.json").is_file():
                sys.exit(f"no model in {self.dir / sub} (pair {self.name!r}): {self.missing}")


PAIRS = {
    "tiny": Pair("tiny", MODELS, PAIR_APIS["tiny"], "it is committed; check out the repository"),
    "smollm2": Pair("smollm2", MODELS / "smollm2", PAIR_APIS["smollm2"],
                    "run `make install`, which builds it with benchmarks/models/build_smollm2.py"),
}


def pair_from_args(name: str, pair_dir: Path | None) -> Pair:
    """`--pair NAME`, optionally with `--pair-dir DIR` for a pair kept elsewhere."""
    if name not in PAIRS:
        raise SystemExit(f"unknown pair {name!r}; choose from {', '.join(PAIRS)}")
    pair = PAIRS[name]
    if pair_dir is not None:
        pair = Pair(pair.name, pair_dir.resolve(), pair.api, f"pass a --pair-dir with "
                    "target/ and draft/ subdirectories")
    return pair


@dataclass(frozen=True)
class ServerConfig:
    """One server under test. `speculative` is --speculative-config without the draft path;
    `seed` set means our plugin (--speculative-plugin seed --seed-config `seed`); `env` is
    added to the server's environment, `args` to its command line."""

    name: str
    speculative: dict | None = None
    seed: dict | None = None
    env: tuple[tuple[str, str], ...] = ()
    args: tuple[str, ...] = ()


def _sd(k: int) -> ServerConfig:
    spec = {"method": "draft_model", "num_speculative_tokens": k,
            "draft_sample_method": "probabilistic"}
    return ServerConfig(f"sd-k{k}", speculative=spec)


def _seed(num_drafters: int, adaptive: bool = True, k: int = 3) -> ServerConfig:
    name = f"seed-d{num_drafters}" + ("" if k == 3 else f"-k{k}") + ("" if adaptive else "-fixed")
    return ServerConfig(name, speculative={"num_speculative_tokens": k},
                        seed={"num_drafters": num_drafters, "adaptive": adaptive})


def _seed_tree(k_config: tuple[int, ...], replacement: bool = False, adaptive: bool = True) -> ServerConfig:
    name = "seed-t" + "".join(map(str, k_config)) + ("-r" if replacement else "") + ("" if adaptive else "-fixed")
    return ServerConfig(name, speculative={"num_speculative_tokens": len(k_config)},
                        seed={"num_drafters": 1, "adaptive": adaptive, "k_config": list(k_config),
                              "replacement": replacement})


# seed-dN: SEED with N drafters, chain drafts of 3 tokens (adaptive speculation, the default);
# seed-d1-kK: one drafter, chain drafts of K tokens;
# seed-dN-fixed, seed-d1-k1-fixed: every round drafts, whatever it gains;
# seed-d1-f32head: seed-d1 with the draft's LM head in float32, as stored (the
#   default runs it in int8, draft_model.Int8Head), to measure that choice;
# seed-d1-fixedlen: seed-d1 drafting all 3 tokens every round (adaptive_length off),
#   to measure the adaptive draft length;
# seed-d1-hold: seed-d1 holding a branch back while its draft is late (late_drafts
#   "hold") instead of decoding it meanwhile, to measure that choice;
# seed-d1-nice15: seed-d1 with its drafter at Ray's default worker priority, nice 15
#   (the pool starts its cluster's workers at nice 0), to measure that choice;
# seed-d1-nogate: seed-d1 without the gate (gate.py): only each branch's own estimate
#   pauses it, to measure the gate;
# seed-d1-notrim: seed-d1 verifying every draft whole (trim off): no cut by the draft
#   tokens' confidence, to measure confidence trimming;
# seed-d1-nowarm: seed-d1 without warm drafts (warm_drafts off): a branch's first draft
#   job prefills its prompt in the drafter after the target's prefill, to measure that;
# seed-d1-dbsN: seed-d1 that starts no draft while more than N branches decode
#   (disable_by_batch_size N); dbs1, under load, runs SEED's engine, Ray and drafter
#   without speculating, to tell what SEED's machinery costs from what its speculation does;
# seed-d1-anycore: seed-d1 with its drafter free to run on every core of the machine
#   (draft_cpus: all of them), the target's too, where by default it is pinned to the
#   last core (which it shares with the engine core and the API server), to measure that;
# seed-d1-poll: seed-d1 with vLLM's per-step draft-token RPC left in (patch
#   engine_core_draft_poll off), to measure that patch;
# seed-tK1K2K3[-r]: one drafter, MCSD token tree k_config=(K1, K2, K3), drawn
# without (or with, -r) replacement;
# plain-sync-b32: plain-b32 with --no-async-scheduling, as vLLM runs custom_class
#   speculation (SEED's) on GPU builds; its CPU platform turns async scheduling off for
#   every server, so on CPU this is plain-b32's engine: an A/A row for the noise;
# plain-log-b32: plain-b32 with vLLM's scheduler wrapped to write the step log
#   (vllm_seed/plain_step_log.py, SEED_STEP_LOG): plain decoding's side of a step-by-step
#   comparison; a diagnostic row, not the stock baseline;
# NAME-b32: NAME with 32-token KV blocks (CPU default 128; prefix-cache hits come in
#   whole blocks, so a ToT node's sibling branches share more of their prompt).
TREES = [(2, 1, 1), (2, 2, 1), (3, 2, 1), (2, 2, 2)]
CONFIGS = {c.name: c for c in (ServerConfig("plain"), *map(_sd, range(1, 5)),
                               *map(_seed, range(1, 4)), _seed(1, adaptive=False),
                               *(_seed(1, k=k) for k in (1, 2, 4)), _seed(1, adaptive=False, k=1),
                               replace(_seed(1), name="seed-d1-f32head",
                                       seed={**_seed(1).seed, "draft_head": "float32"}),
                               replace(_seed(1), name="seed-d1-fixedlen",
                                       seed={**_seed(1).seed, "adaptive_length": False}),
                               replace(_seed(1), name="seed-d1-hold",
                                       seed={**_seed(1).seed, "late_drafts": "hold"}),
                               replace(_seed(1), name="seed-d1-nice15",
                                       env=(("RAY_worker_niceness", "15"),)),
                               replace(_seed(1), name="seed-d1-nogate",
                                       seed={**_seed(1).seed, "gate": False}),
                               replace(_seed(1), name="seed-d1-notrim",
                                       seed={**_seed(1).seed, "trim": False}),
                               replace(_seed(1), name="seed-d1-nowarm",
                                       seed={**_seed(1).seed, "warm_drafts": False}),
                               *(replace(_seed(1), name=f"seed-d1-dbs{n}",
                                         seed={**_seed(1).seed, "disable_by_batch_size": n})
                                 for n in (1, 8)),
                               replace(_seed(1), name="seed-d1-anycore",
                                       seed={**_seed(1).seed, "draft_cpus": machine_cores()}),
                               replace(_seed(1), name="seed-d1-poll",
                                       env=(("SEED_DISABLE_PATCHES", "engine_core_draft_poll"),)),
                               *map(_seed_tree, TREES), _seed_tree((2, 2, 1), replacement=True),
                               *(_seed_tree(k, adaptive=False) for k in TREES),
                               _seed_tree((2, 2, 1), replacement=True, adaptive=False))}
CONFIGS.update({f"{name}-b32": replace(CONFIGS[name], name=f"{name}-b32", args=("--block-size", "32"))
                for name in ("plain", "sd-k1", "seed-d1", "seed-d1-hold", "seed-d1-nice15", "seed-d1-nogate",
                             "seed-d1-notrim", "seed-d1-nowarm", "seed-d1-dbs1", "seed-d1-dbs8", "seed-d1-anycore",
                             "seed-d1-k1-fixed")})
CONFIGS["plain-sync-b32"] = replace(CONFIGS["plain-b32"], name="plain-sync-b32",
                                    args=(*CONFIGS["plain-b32"].args, "--no-async-scheduling"))
CONFIGS["plain-log-b32"] = replace(CONFIGS["plain-b32"], name="plain-log-b32", args=(
    *CONFIGS["plain-b32"].args, "--scheduler-cls", "vllm_seed.plain_step_log.StepLoggedScheduler"))


def server_argv(config: ServerConfig, pair_dir: Path, port: int, *, kv_cache_mib: int = 1024,
                extra: tuple[str, ...] = ()) -> list[str]:
    """The `vllm serve` command line of `config` on the pair's target (and draft); a small
    explicit KV cache (target and draft share it) lets every server fit in RAM at once."""
    argv = [VLLM, "serve", str(pair_dir / "target"), "--host", "127.0.0.1", "--port", str(port),
            "--dtype", "float32", "--max-model-len", "2048",
            "--kv-cache-memory-bytes", str(kv_cache_mib * 2**20), *extra, *config.args]
    if config.seed is not None:
        argv += ["--speculative-plugin", "seed", "--seed-config", json.dumps(config.seed)]
    if config.speculative is not None:
        spec = {"model": str(pair_dir / "draft"), **config.speculative}
        argv += ["--speculative-config", json.dumps(spec)]
    return argv


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """One `vllm serve` process tree with its log file and memory peak."""

    def __init__(self, config: ServerConfig, argv: list[str], log_path: Path, port: int):
        self.config, self.argv, self.log_path, self.port = config, argv, log_path, port
        self.url = f"http://127.0.0.1:{port}"
        self.proc: subprocess.Popen | None = None
        self.error: str | None = None
        self.peak_rss = self.last_rss = 0
        self.last_rss_by_name: dict[str, int] = {}
        self.process_names: set[str] = set()
        self._seen: dict[int, psutil.Process] = {}

    def start(self) -> None:
        # dev mode: POST /reset_prefix_cache; RAY_ADDRESS=local: SEED starts its own Ray;
        # VLLM_CPU_KVCACHE_SPACE would override --kv-cache-memory-bytes.
        env = {k: v for k, v in os.environ.items() if k != "VLLM_CPU_KVCACHE_SPACE"}
        env.update(VLLM_SERVER_DEV_MODE="1", RAY_ADDRESS="local", **dict(self.config.env))
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, env=env,
                                         start_new_session=True)

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + "/health", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    def sample_memory(self) -> None:
        """Sum RSS over the process tree now (also per process name); keep the peak and
        remember every process."""
        try:
            root = psutil.Process(self.proc.pid)
            tree = [root, *root.children(recursive=True)]
        except psutil.Error:
            return
        total, by_name = 0, {}
        for p in tree:
            try:
                rss, name = p.memory_info().rss, p.name()
                total += rss
                by_name[name] = by_name.get(name, 0) + rss
                self._seen.setdefault(p.pid, p)
                self.process_names.add(name)
            except psutil.Error:
                pass
        self.last_rss, self.last_rss_by_name = total, by_name
        self.peak_rss = max(self.peak_rss, total)

    def interrupt(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.sample_memory()  # records the descendants to kill later
            _signal_group(self.proc.pid, signal.SIGINT)

    def kill(self) -> None:
        if self.proc is None:
            return
        _signal_group(self.proc.pid, signal.SIGKILL)
        seen = list(self._seen.values())
        for p in seen:
            try:
                p.kill()
            except psutil.Error:
                pass
        self.proc.wait()
        psutil.wait_procs(seen, timeout=5)

    def log_tail(self, num_lines: int = 30) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-num_lines:])


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        pass


class Fleet:
    """Context manager: start every server at once, wait for /health, sample memory every
    `sample_s`, and stop them all on exit (also on Ctrl-C or an exception)."""

    def __init__(self, servers: list[Server], startup_timeout_s: float, sample_s: float = 1.0):
        self.servers, self.startup_timeout_s, self.sample_s = servers, startup_timeout_s, sample_s
        self._stop = threading.Event()
        self._sampler = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> "Fleet":
        try:
            for server in self.servers:
                server.start()
        except BaseException:
            self.shutdown()
            raise
        self._sampler.start()
        return self

    def __exit__(self, *exc) -> None:
        self.shutdown()

    def wait_ready(self) -> None:
        """Poll until every server is healthy, has exited, or the timeout passed; a failed
        server gets `error` (with its log tail) and is stopped, the others go on."""
        deadline = time.monotonic() + self.startup_timeout_s
        pending = [s for s in self.servers if s.error is None]
        while pending:
            for server in list(pending):
                if server.proc.poll() is not None:
                    server.error = f"exited with code {server.proc.returncode} during startup"
                elif server.healthy():
                    pending.remove(server)
                    continue
                elif time.monotonic() > deadline:
                    server.error = f"not healthy after {self.startup_timeout_s:g} s"
                else:
                    continue
                pending.remove(server)
                server.interrupt()
                server.kill()
                print(f"[bench] server {server.config.name} failed: {server.error}; "
                      f"log {server.log_path}:\n{server.log_tail()}", file=sys.stderr)
            time.sleep(1.0)

    def shutdown(self, grace_s: float = 30.0) -> None:
        self._stop.set()
        if self._sampler.is_alive():
            self._sampler.join(timeout=10)
        for server in self.servers:
            server.interrupt()
        deadline = time.monotonic() + grace_s
        for server in self.servers:
            if server.proc is not None:
                try:
                    server.proc.wait(max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    pass
            server.kill()

    def _sample(self) -> None:
        while not self._stop.wait(self.sample_s):
            for server in self.servers:
                if server.error is None and server.proc.poll() is None:
                    server.sample_memory()
