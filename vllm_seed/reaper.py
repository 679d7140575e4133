"""Reaps our Ray cluster when the engine core dies without shutting it down.

vLLM's API server stops its engine core with SIGKILL on the whole process
tree (``kill_process_tree``, shutdown timeout 0), so the pool's own shutdown
never runs. The raylet then dies under its agents, which block for 60 s
publishing the raylet's death to the dead GCS before they exit. This small
process, detached from the engine core's tree, waits for the engine core's
end of a pipe to close (it always does when the engine core exits, however it
dies) and kills the Ray processes it was given that are still alive.

Usage: ``python -m vllm_seed.reaper PID:CREATE_TIME ...`` with stdin the pipe.
"""

from __future__ import annotations

import os
import subprocess
import sys

import psutil


def start(procs: list[psutil.Process]) -> int:
    """Start a reaper for ``procs``; returns the write end of its pipe: close it
    (or exit) to make the reaper act."""
    read_fd, write_fd = os.pipe()
    args = [f"{p.pid}:{p.create_time()!r}" for p in procs]
    subprocess.run(
        [sys.executable, "-m", "vllm_seed.reaper", *args],
        stdin=read_fd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True, check=True,
    )  # returns at once: the reaper forks and its parent exits
    os.close(read_fd)
    return write_fd


def _alive(pid: int, create_time: float) -> psutil.Process | None:
    try:
        p = psutil.Process(pid)
        return p if p.create_time() == create_time else None  # pid reused: not ours
    except psutil.NoSuchProcess:
        return None


def main(argv: list[str]) -> None:
    if os.fork():  # detach: out of the engine core's tree, so out of its kill
        os._exit(0)
    targets = [(int(pid), float(t)) for pid, t in (a.split(":", 1) for a in argv)]
    while os.read(0, 1 << 12):  # EOF: every holder of the write end is gone
        pass
    procs = [p for p in (_alive(pid, t) for pid, t in targets) if p is not None]
    for p in procs:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass


if __name__ == "__main__":
    main(sys.argv[1:])
