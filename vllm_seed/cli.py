"""``--speculative-plugin seed``: maps the flag onto vLLM's own seams.

``vllm serve T --speculative-plugin seed --speculative-config
'{"model": D, "num_speculative_tokens": 3}' --seed-config '{...}'`` becomes
``speculative_config={"method": "custom_class", ...}``, ``scheduler_cls``,
``worker_cls`` and ``additional_config["seed"]``.
"""

from __future__ import annotations

import argparse
import functools

from vllm_seed import _vllm_compat, metrics
from vllm_seed.config import (
    ADDITIONAL_CONFIG_KEY,
    DEFAULT_NUM_SPECULATIVE_TOKENS,
    SeedConfig,
    parse_seed_config_json,
)

PLUGIN_NAME = "seed"


def seed_engine_overrides(speculative_config: dict | None, seed_config: dict) -> dict:
    """Engine-argument values for SEED, validated (ValueError names the bad value)."""
    spec = dict(speculative_config or {})
    draft = spec.pop("model", None)
    if draft is None:
        raise ValueError(
            "--speculative-plugin seed needs the draft model: "
            '--speculative-config \'{"model": "DRAFT_DIR", "num_speculative_tokens": 3}\''
        )
    k = spec.pop("num_speculative_tokens", None)
    k_config = seed_config.get("k_config")
    if k is None and isinstance(k_config, (list, tuple)) and k_config:
        k = len(k_config)  # a tree's depth
    elif k is None:
        k = DEFAULT_NUM_SPECULATIVE_TOKENS
    spec.pop("method", None)
    if spec:
        raise ValueError(
            f"--speculative-plugin seed: unsupported speculative-config key(s) "
            f"{sorted(spec)}; SEED reads only 'model' and 'num_speculative_tokens'"
        )
    config = SeedConfig.from_dict(
        {"draft_model": draft, "num_speculative_tokens": k, **seed_config}
    )
    return {
        "speculative_config": {
            "method": "custom_class",
            "model": _vllm_compat.PROPOSER_CLS,
            # vLLM sizes its draft slots by this: a tree's nodes all go
            # through one target step.
            "num_speculative_tokens": config.num_draft_tokens,
        },
        "scheduler_cls": _vllm_compat.SCHEDULER_CLS,
        "worker_cls": _vllm_compat.WORKER_CLS[_vllm_compat.platform_kind()],
        "additional_config": {ADDITIONAL_CONFIG_KEY: config.to_dict()},
    }


def apply_to_engine_args(engine_args, args: argparse.Namespace):
    plugin = getattr(args, "speculative_plugin", None)
    if plugin is None:
        if getattr(args, "seed_config", None):
            raise ValueError("--seed-config needs --speculative-plugin seed")
        return engine_args
    if plugin != PLUGIN_NAME:
        raise ValueError(
            f"--speculative-plugin {plugin!r} is unknown; the only plugin is {PLUGIN_NAME!r}"
        )
    overrides = seed_engine_overrides(
        engine_args.speculative_config, parse_seed_config_json(args.seed_config)
    )
    additional = dict(engine_args.additional_config or {})
    additional.update(overrides.pop("additional_config"))
    engine_args.additional_config = additional
    for name, value in overrides.items():
        setattr(engine_args, name, value)
    return engine_args


def add_seed_cli_args(parser):
    group = parser.add_argument_group("SEED speculative decoding (vllm-seed)")
    group.add_argument(
        "--speculative-plugin",
        choices=[PLUGIN_NAME],
        default=None,
        help="Run speculative decoding through a plugin. 'seed': SEED scheduled "
        "speculative decoding with drafter actors; the draft model and length "
        "come from --speculative-config.",
    )
    group.add_argument(
        "--seed-config",
        default=None,
        help='SEED options as JSON, e.g. \'{"num_drafters": 2}\'.',
    )
    return parser


def extend_engine_args() -> None:
    """Wrap EngineArgs.add_cli_args / from_cli_args once per process."""
    engine_args = _vllm_compat.engine_args_cls()
    if getattr(engine_args, "_seed_extended", False):
        return
    original_add = engine_args.add_cli_args
    original_from = engine_args.from_cli_args.__func__

    @functools.wraps(original_add)
    def add_cli_args(parser, *a, **kw):
        # Only the CLI's main process (the API server of `vllm serve`) builds
        # this parser: it serves /metrics, so it owns SEED's stats snapshot.
        metrics.install_collector(fresh=True)
        parser = original_add(parser, *a, **kw)
        if not any("--speculative-plugin" in act.option_strings for act in parser._actions):
            add_seed_cli_args(parser)
        return parser

    @functools.wraps(original_from)
    def from_cli_args(cls, args):
        return apply_to_engine_args(original_from(cls, args), args)

    engine_args.add_cli_args = staticmethod(add_cli_args)
    engine_args.from_cli_args = classmethod(from_cli_args)
    engine_args._seed_extended = True
