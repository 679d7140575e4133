"""The only Ray file: drafter actors, job submission, completion-order results.

Submit all work, then ``ray.wait``: results are admitted in the order the
drafters finished (each ``DraftBatch`` carries its monotonic finish time),
which IS the FCFS order of SEED's verify queue.
"""

from __future__ import annotations

import logging
import os
import socket
import time

import psutil

from vllm_seed import _vllm_compat, reaper
from vllm_seed.config import SeedConfig
from vllm_seed.messages import DraftBatch, DraftJob

logger = logging.getLogger("vllm.seed")  # under vLLM's configured logger
MIN_BACKOFF_S, MAX_BACKOFF_S = 0.5, 30.0  # before a failed drafter is pinged back
START_TIMEOUT_S = 180.0  # for every drafter to load its model and answer
_CALL_EMA = 0.2  # weight of the newest call in a drafter's submit-to-finish average


def import_ray():
    try:
        import ray
    except ImportError as e:
        raise RuntimeError(
            "vllm-seed hosts its drafters in Ray actors, but Ray is not "
            f"importable ({e}). Install it: pip install 'ray>=2.40'"
        ) from None
    return ray


class DrafterPool:
    def __init__(self, config: SeedConfig, max_len: int, cpus: tuple[int, ...] = (), drafter_cls=None):
        ray = self.ray = import_ray()
        self._ray_roots: list[psutil.Process] = []
        if not ray.is_initialized():
            before = {p.pid for p in psutil.Process().children(recursive=True)}
            _start_ray(ray, os.environ.get("RAY_ADDRESS", "local"), config.num_drafters)
            self._owns_ray = True
            # The processes ray.init started (GCS, raylet, ...): at shutdown
            # they and everything below them go, whatever state Ray is in.
            self._ray_roots = [p for p in psutil.Process().children() if p.pid not in before]
        else:
            self._owns_ray = False
        if drafter_cls is None:
            from vllm_seed.drafter import Drafter as drafter_cls

        # Ray restarts a dead drafter (the pool pings it back into service);
        # a job in flight when it died fails at once and is not retried.
        remote = ray.remote(num_cpus=1, max_restarts=-1, max_task_retries=0)(drafter_cls)
        self.actors = [
            remote.remote(config.draft_model, max_len, i, config.draft_threads, cpus, config.draft_head)
            for i in range(config.num_drafters)
        ]
        self._ray_procs: set[psutil.Process] = set()
        self._reaper_fd = None
        try:  # a drafter that keeps dying (Ray restarts it) would block here for ever
            self.vocab_size = ray.get([a.vocab_size.remote() for a in self.actors],
                                      timeout=START_TIMEOUT_S)[0]
        except ray.exceptions.GetTimeoutError:
            self.shutdown()
            raise RuntimeError(
                f"vllm-seed: the {config.num_drafters} drafter(s) of {config.draft_model!r} did "
                f"not start within {START_TIMEOUT_S:.0f} s. On CPU the usual cause is memory: "
                "Ray kills drafters when RAM runs out, and vLLM's CPU KV cache takes most of "
                "it unless limited; pass e.g. --kv-cache-memory-bytes 2G (or set "
                "VLLM_CPU_KVCACHE_SPACE in GiB). Ray's logs: /tmp/ray/session_latest/logs"
            ) from None
        self._note_ray_processes()
        # Drafter workers die with the raylet; the agents and roots need help.
        self._reaper_fd = reaper.start(sorted(self._ray_procs, key=lambda p: p.pid)) if self._owns_ray else None
        self.in_flight: dict = {}  # ObjectRef -> (drafter, submitted_at, req_ids)
        self.pings: dict = {}  # ObjectRef -> drafter: health checks of drafters marked down
        self.retry_at: dict[int, float] = {}  # down drafter -> when to ping it
        self.backoff: dict[int, float] = {}  # drafter -> its next wait; doubles per failure
        self.call_s: dict[int, float] = {}  # drafter -> moving average of submit-to-finish seconds
        self.restarts = 0

    @property
    def down(self) -> set[int]:
        """Drafters that failed and have not answered a ping since."""
        return set(self.retry_at) | set(self.pings.values())

    @property
    def num_drafters(self) -> int:
        return len(self.actors)

    def submit(self, drafter: int, jobs: list[DraftJob]) -> None:
        ref = self.actors[drafter].draft.remote(jobs)
        self.in_flight[ref] = (drafter, time.monotonic(), [j.req_id for j in jobs])

    def drafting(self) -> bool:
        """A draft job is in flight (or done and not yet polled)."""
        return bool(self.in_flight)

    def time_to_land(self) -> float | None:
        """Seconds until every in-flight draft job should have finished, by its
        drafter's recent submit-to-finish time; None if none is in flight or a
        drafter is not measured yet."""
        left = [self.time_left(drafter) for drafter, _, _ in self.in_flight.values()]
        if not left or None in left:
            return None
        return max(left)

    def time_left(self, drafter: int) -> float | None:
        """Seconds until ``drafter``'s in-flight jobs should have finished, by
        its recent submit-to-finish time (0 if it has none); None if it is not
        measured yet."""
        if drafter not in self.call_s:
            return None
        now = time.monotonic()
        return max([0.0] + [self.call_s[drafter] - (now - submitted_at)
                            for d, submitted_at, _ in self.in_flight.values() if d == drafter])

    def call_time(self, drafter: int) -> float | None:
        """``drafter``'s recent submit-to-finish seconds; None if not measured yet."""
        return self.call_s.get(drafter)

    def free(self, drafter: int, req_ids: list[str]) -> None:
        self.actors[drafter].free.remote(req_ids)

    def poll(
        self, timeout_s: float, job_timeout_s: float = float("inf")
    ) -> tuple[list[DraftBatch], list[tuple[int, list[str]]]]:
        """Finished batches in completion order, and (drafter, req_ids) of
        failed jobs: raised, actor died, or older than ``job_timeout_s``."""
        self._check_pings()
        if not self.in_flight:
            return [], []
        refs = list(self.in_flight)
        ready, _ = self.ray.wait(refs, num_returns=1, timeout=timeout_s)
        if ready:  # take everything else already done too
            ready, _ = self.ray.wait(refs, num_returns=len(refs), timeout=0)
        batches, failed = [], []
        now = time.monotonic()
        for ref in set(refs) - set(ready):
            drafter, submitted_at, req_ids = self.in_flight[ref]
            if now - submitted_at > job_timeout_s:  # hung: give up on it
                del self.in_flight[ref]
                logger.warning("SEED drafter %d timed out after %.1fs", drafter, now - submitted_at)
                failed.append((drafter, req_ids))
                self.ray.kill(self.actors[drafter], no_restart=False)  # Ray restarts it
        for ref in ready:
            drafter, submitted_at, req_ids = self.in_flight.pop(ref)
            try:
                batch = self.ray.get(ref)
                batch.submitted_at = submitted_at  # one clock: CLOCK_MONOTONIC is system-wide
                took = batch.finished_at - submitted_at
                old = self.call_s.get(drafter)
                if batch.drafts:  # a warm job's prompt prefill says nothing of a round's time
                    self.call_s[drafter] = took if old is None else old + _CALL_EMA * (took - old)
                batches.append(batch)
                self.backoff.pop(drafter, None)
            except Exception as e:  # a crashed drafter degrades, never fails requests
                logger.warning("SEED drafter %d failed: %s", drafter, e)
                failed.append((drafter, req_ids))
        for drafter, _ in failed:
            self._mark_down(drafter)
        batches.sort(key=lambda b: b.finished_at)
        return batches, failed

    def _mark_down(self, drafter: int) -> None:
        if drafter not in self.down:
            wait = self.backoff.get(drafter, MIN_BACKOFF_S)
            self.backoff[drafter] = min(2 * wait, MAX_BACKOFF_S)
            self.retry_at[drafter] = time.monotonic() + wait

    def _check_pings(self) -> None:
        now = time.monotonic()
        for drafter, at in list(self.retry_at.items()):
            if at <= now:
                del self.retry_at[drafter]
                # Retried until it answers: a drafter Ray is still restarting
                # is not pinged again later (that would double its backoff).
                ping = self.actors[drafter].ping.options(max_task_retries=-1).remote()
                self.pings[ping] = drafter
        if not self.pings:
            return
        ready, _ = self.ray.wait(list(self.pings), num_returns=len(self.pings), timeout=0)
        for ref in ready:
            drafter = self.pings.pop(ref)
            try:
                self.ray.get(ref)
                self.restarts += 1
                self._note_ray_processes()
                logger.warning("SEED drafter %d is back", drafter)
            except Exception:  # restarts used up or the call failed: ask again, later
                self._mark_down(drafter)

    def _note_ray_processes(self) -> None:
        """Remember every process of our own Ray cluster: once the raylet is
        gone its agents are orphans, out of reach of a tree walk."""
        for root in self._ray_roots:
            try:
                self._ray_procs.update([root, *root.children(recursive=True)])
            except psutil.NoSuchProcess:
                pass

    def shutdown(self) -> None:
        if not self._owns_ray:
            for actor in self.actors:
                self.ray.kill(actor)
        self.actors = []
        if self._owns_ray and self.ray.is_initialized():
            # Kill what could be orphaned first (the raylet's agents and our
            # drafters): vLLM SIGKILLs the tree of an engine core that takes
            # over 5 s to shut down, and agents orphaned by a dead raylet hang
            # for a minute on a dead GCS. Then Ray stops the processes it started.
            self._note_ray_processes()
            _kill(self._ray_procs - set(self._ray_roots))
            self.ray.shutdown()
            _kill(self._ray_roots)
            self._ray_procs = set()
        if self._reaper_fd is not None:
            os.close(self._reaper_fd)  # the reaper checks, finds nothing, exits
            self._reaper_fd = None


def _start_ray(ray, address: str, num_drafters: int) -> None:
    """A cluster of our own (it goes down with this server), unless the user
    points RAY_ADDRESS at one. Fails fast: ray.init retries an unreachable
    address for minutes."""
    if address not in ("local", "auto"):
        host, _, port = address.removeprefix("ray://").rpartition(":")
        try:
            socket.create_connection((host, int(port)), timeout=3).close()
        except (OSError, ValueError) as e:
            raise RuntimeError(
                f"vllm-seed cannot reach the Ray cluster at RAY_ADDRESS={address!r} ({e}); "
                "start it (`ray start --head`) or unset RAY_ADDRESS to let vllm-seed start its own"
            ) from None
    own = {}
    if address == "local":
        own["num_cpus"] = num_drafters
        # Ray runs its workers at nice 15, under everything else; a drafter
        # shares its core with the API server and the engine core's threads,
        # and both its drafts and its restart (model load) would wait on them.
        os.environ.setdefault("RAY_worker_niceness", "0")
    try:
        ray.init(address=address, **own, include_dashboard=False, log_to_driver=False,
                 configure_logging=False, namespace="vllm-seed")
    except Exception as e:
        raise RuntimeError(
            f"vllm-seed could not start Ray ({type(e).__name__}: {e}); "
            "check `ray start --head` works on this machine"
        ) from e


def _kill(procs) -> None:
    for p in procs:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(procs, timeout=2.0)


def default_draft_cpus(config: SeedConfig) -> tuple[int, ...]:
    """The configured cores; on CPU by default the last one, which vLLM's
    worker leaves to the engine core (its OpenMP threads take the others)."""
    if config.draft_cpus or _vllm_compat.platform_kind() != "cpu":
        return config.draft_cpus
    cores = sorted(os.sched_getaffinity(0))
    return tuple(cores[-1:]) if len(cores) > 1 else ()
