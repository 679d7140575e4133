"""A drafter that dies mid-stream degrades its branches to plain decoding:
no request fails or is lost, and greedy output stays identical."""

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
def victim_llm():
    """A SEED engine like seed_llm, of its own: the shared one must not run the later tests
    with a drafter down (they count how much SEED speculated)."""
    llm = make_seed_llm()
    yield llm
    llm.llm_engine.engine_core.shutdown()


def test_killing_a_drafter_mid_stream_loses_nothing(plain_llm, victim_llm):
    seed_llm = victim_llm
    from vllm import SamplingParams

    prompts = gsm8k_prompts(12)
    params = SamplingParams(temperature=0, max_tokens=96, ignore_eos=True)
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
    assert not victims[0].is_running()
    assert [o.outputs[0].token_ids for o in outs] == expected
    # The engine keeps serving after the loss.
    again = seed_llm.generate(prompts[:3], params, use_tqdm=False)
    assert [o.outputs[0].token_ids for o in again] == expected[:3]
