import os
import pathlib

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
# The embedded pair; another pair can be tested by pointing these elsewhere.
TARGET_DIR = pathlib.Path(os.environ.get("SEED_TEST_TARGET", REPO / "benchmarks" / "models" / "target"))
DRAFT_DIR = pathlib.Path(os.environ.get("SEED_TEST_DRAFT", REPO / "benchmarks" / "models" / "draft"))


def make_random_llama(path, vocab=64, hidden=32, layers=2, heads=4, kv_heads=2, seed=0):
    """A tiny random Llama directory (no tokenizer): enough for the drafter."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab, hidden_size=hidden, intermediate_size=2 * hidden,
        num_hidden_layers=layers, num_attention_heads=heads,
        num_key_value_heads=kv_heads, max_position_embeddings=256,
    )
    LlamaForCausalLM(config).save_pretrained(path)
    return str(path)


@pytest.fixture(scope="session")
def random_llama_dir(tmp_path_factory):
    return make_random_llama(tmp_path_factory.mktemp("random_llama"))
