"""The drafter pool takes down every Ray process it started, even when vLLM's
shutdown has already killed the raylet and GCS under it (a slow engine core is
SIGKILLed after 5 s; the raylet's agents then linger as orphans)."""

import os
import signal
import subprocess
import sys

import psutil
import pytest

from tests.conftest import DRAFT_DIR, REPO
from vllm_seed.config import SeedConfig
from vllm_seed.drafter_pool import DrafterPool


def descendants():
    return psutil.Process().children(recursive=True)


@pytest.mark.parametrize("kill_first", [(), ("raylet", "gcs_server")])
def test_shutdown_leaves_no_ray_process(kill_first):
    others = {p.pid for p in descendants()}  # e.g. the session's engines
    pool = DrafterPool(SeedConfig(draft_model=str(DRAFT_DIR), num_speculative_tokens=3), max_len=256)
    try:
        tree = [p for p in descendants() if p.pid not in others]
        names = [p.name() for p in tree]
        assert "raylet" in names and any(n.startswith("ray::Drafter") for n in names), names
        assert any("Agent" in n for n in names), names  # the processes orphaned in CI
        for p in tree:
            if p.name() in kill_first:
                os.kill(p.pid, signal.SIGKILL)
    finally:
        pool.shutdown()
    _, alive = psutil.wait_procs(tree, timeout=0.5)
    assert not alive, [(p.pid, p.name()) for p in alive]


HOST = """
import sys
from vllm_seed.config import SeedConfig
from vllm_seed.drafter_pool import DrafterPool
pool = DrafterPool(SeedConfig(draft_model=sys.argv[1], num_speculative_tokens=3), max_len=256)
print("ready", flush=True)
sys.stdin.read()
"""


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_ray_goes_when_its_host_is_killed_with_its_tree(sig):
    """What a Ctrl-C (or SIGTERM) does to `vllm serve`: the signal to the process group, then
    vLLM's API server SIGKILLs the engine core's tree at once (its shutdown
    timeout is 0), so no pool shutdown runs. Its kill list, as logged by
    vLLM, holds the GCS, the raylet and Ray's Python daemons but not the
    raylet's own children (agents, drafter workers): kill the same set."""
    host = subprocess.Popen([sys.executable, "-c", HOST, str(DRAFT_DIR)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, cwd=REPO, start_new_session=True)
    try:
        assert host.stdout.readline().strip() == b"ready"
        tree = psutil.Process(host.pid).children(recursive=True)
        assert any("Agent" in p.name() for p in tree), [p.name() for p in tree]
        os.killpg(host.pid, sig)
        for p in psutil.Process(host.pid).children() + [psutil.Process(host.pid)]:
            p.kill()
        host.wait(10)
        _, alive = psutil.wait_procs(tree, timeout=10)  # the agents alone would take 60 s
        assert not alive, [(p.pid, p.name()) for p in alive]
    finally:
        host.kill()
