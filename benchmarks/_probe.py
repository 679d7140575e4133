"""HTTP side of the benchmarks: /metrics, prefix-cache reset, and a streamed TTFT/TPOT probe."""

from __future__ import annotations

import json
import statistics
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor


def get_text(url: str, timeout_s: float = 30.0) -> str:
    with urllib.request.urlopen(url, timeout=timeout_s) as response:
        return response.read().decode()


def reset_prefix_cache(root: str) -> bool:
    """POST /reset_prefix_cache (needs VLLM_SERVER_DEV_MODE=1); False when refused."""
    request = urllib.request.Request(root + "/reset_prefix_cache", data=b"", method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status == 200
    except OSError:
        return False


def _stream_one(root: str, body: dict, timeout_s: float) -> dict:
    """One streamed completion: seconds to the first text chunk, and per output token after."""
    request = urllib.request.Request(root + "/v1/completions", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    start = time.perf_counter()
    first = last = None
    tokens = 0
    with urllib.request.urlopen(request, timeout=timeout_s) as response:
        for raw in response:
            line = raw.decode().strip()
            if not line.startswith("data:") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[len("data:"):])
            if any(c.get("text") for c in chunk.get("choices") or []):
                last = time.perf_counter()
                first = first or last
            tokens = (chunk.get("usage") or {}).get("completion_tokens") or tokens
    if first is None:
        raise RuntimeError(f"{root}: streamed completion returned no text")
    tpot = (last - first) / (tokens - 1) if tokens > 1 else None
    return {"ttft_s": first - start, "tpot_s": tpot, "tokens": tokens}


def stream_probe(root: str, model: str, prompt: str, temperature: float, num_requests: int = 3,
                 max_tokens: int = 64, seed: int = 0, timeout_s: float = 300.0) -> dict:
    """`num_requests` concurrent streamed completions of `max_tokens` tokens (EOS ignored);
    medians of TTFT (time to first chunk) and TPOT ((last - first) / (tokens - 1))."""
    bodies = [{"model": model, "prompt": prompt, "max_tokens": max_tokens,
               "temperature": temperature, "seed": seed + i, "ignore_eos": True,
               "stream": True, "stream_options": {"include_usage": True}}
              for i in range(num_requests)]
    with ThreadPoolExecutor(num_requests) as pool:
        samples = list(pool.map(lambda b: _stream_one(root, b, timeout_s), bodies))
    tpots = [s["tpot_s"] for s in samples if s["tpot_s"] is not None]
    return {"ttft_s": statistics.median(s["ttft_s"] for s in samples),
            "tpot_s": statistics.median(tpots) if tpots else None, "samples": samples}
