"""A drafter that dies mid-stream degrades its branches to plain decoding:
no request fails or is lost, and greedy output stays identical. Ray restarts
it, and its branches draft again."""

import json
import threading
import time

import psutil
import pytest

from tests.e2e.conftest import make_seed_llm
from tests.e2e.sampling import gsm8k_prompts


def drafter_processes():
    me = psutil.Process()
    found = []
    for p in me.children(recursive=True) + [q for q in psutil.process_iter() if q.pid != me.pid]:
        try:
            if "Drafter" in " ".join(p.cmdline()) or p.name().startswith("ray::Drafter"):
                found.append(p)
        except psutil.Error:
            pass
    return {p.pid: p for p in found}.values()


@pytest.fixture(scope="module")
def victim_llm(tmp_path_factory):
    """A SEED engine like seed_llm, of its own: the shared one must not run the later tests
    with a drafter down (they count how much SEED speculated). Its SEED stats go to a file
    of its own (metrics.STATS_ENV, read by the engine core at its start)."""
    from vllm_seed.metrics import STATS_ENV

    path = str(tmp_path_factory.mktemp("victim") / "seed-stats.json")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(STATS_ENV, path)
        llm = make_seed_llm()
    llm.seed_stats_path = path
    yield llm
    llm.llm_engine.engine_core.shutdown()


def seed_stats(llm) -> dict:
    with open(llm.seed_stats_path) as f:
        return json.load(f)


def test_killing_a_drafter_mid_stream_loses_nothing(plain_llm, victim_llm):
    seed_llm = victim_llm
    from vllm import SamplingParams

    prompts = gsm8k_prompts(12)
    # Long enough that the kill, a second in, lands mid-stream however fast the run.
    params = SamplingParams(temperature=0, max_tokens=256, ignore_eos=True)
    expected = [o.outputs[0].token_ids for o in plain_llm.generate(prompts, params, use_tqdm=False)]
    victims = list(drafter_processes())
    assert victims, "no drafter actor process found"

    def kill_soon():
        time.sleep(1.0)
        victims[0].kill()

    killer = threading.Thread(target=kill_soon)
    killer.start()
    outs = seed_llm.generate(prompts, params, use_tqdm=False)
    killer.join()
    psutil.wait_procs(victims[:1], timeout=10)  # SIGKILL lands when the kernel next runs it
    assert not victims[0].is_running() or victims[0].status() == psutil.STATUS_ZOMBIE
    assert [o.outputs[0].token_ids for o in outs] == expected
    assert seed_stats(seed_llm)["plain_fallbacks"] > 0  # its branches decoded plainly
    # The engine keeps serving after the loss, and Ray restarts the drafter: its
    # restart (a model load) takes seconds, so serve until it is back.
    deadline = time.monotonic() + 120
    while seed_stats(seed_llm)["drafter_restarts"] == 0:
        assert time.monotonic() < deadline, "the killed drafter did not come back"
        again = seed_llm.generate(prompts[:3], params, use_tqdm=False)
        assert [o.outputs[0].token_ids for o in again] == expected[:3]
    # Back in service: its branches draft again (with adaptive speculation off,
    # every branch of every round drafts; none falls back).
    before = seed_stats(seed_llm)
    outs = seed_llm.generate(prompts, params, use_tqdm=False)
    assert [o.outputs[0].token_ids for o in outs] == expected
    after = seed_stats(seed_llm)
    assert after["plain_fallbacks"] == before["plain_fallbacks"]
    assert after["drafts_verified"] > before["drafts_verified"]
