"""Shared pieces of the embedded tiny target/draft pair: data, tokenizer, architectures, saving.

The pair is a GSM8K-only Llama *target* (8 layers, 256 wide) and a 2-layer *draft* distilled
from it. Both share one byte-level BPE tokenizer, so the draft can propose token ids that the
target verifies directly. `train_pair.py` builds them and `evaluate_pair.py` measures them.
"""
from __future__ import annotations

import json
import random
from pathlib import Path

import torch

MODELS_DIR = Path(__file__).resolve().parent
REPO_ROOT = MODELS_DIR.parents[1]
DATA_DIR = REPO_ROOT / "vllm_seed" / "tot" / "data" / "gsm8k"
TARGET_DIR = MODELS_DIR / "target"
DRAFT_DIR = MODELS_DIR / "draft"
CURVES_PATH = MODELS_DIR / "train_curves.json"
METRICS_PATH = MODELS_DIR / "pair_metrics.json"

SEED = 1234
BOS, EOS = "<|bos|>", "<|eos|>"
BOS_ID, EOS_ID = 0, 1  # special tokens are added first, so their ids are fixed
VOCAB_SIZE = 4096
SEQ_LEN = 256

# Architectures as data: the only difference between the two models is these numbers.
ARCHS = {
    "target": dict(num_hidden_layers=8, hidden_size=256, num_attention_heads=4,
                   num_key_value_heads=4, intermediate_size=688),
    "draft": dict(num_hidden_layers=2, hidden_size=192, num_attention_heads=3,
                  num_key_value_heads=3, intermediate_size=512),
}


def setup_torch(num_threads: int = 2) -> None:
    """Make CPU runs fast and repeatable."""
    # Denormals appear in the tail of the AdamW moments; flushing them avoids an ~8x slowdown.
    torch.set_flush_denormal(True)
    torch.set_num_threads(num_threads)
    torch.manual_seed(SEED)
    random.seed(SEED)


def load_split(split: str) -> list[dict]:
    with open(DATA_DIR / f"{split}.jsonl") as f:
        return [json.loads(line) for line in f]


def prompt_text(question: str) -> str:
    """The prompt without BOS: the tokenizer's post-processor prepends it."""
    return f"Question: {question}\nAnswer:"


def example_text(ex: dict) -> str:
    """One training document; the `#### N` final-answer line is kept."""
    return f"{BOS}{prompt_text(ex['question'])} {ex['answer']}{EOS}"


def train_tokenizer(texts: list[str]):
    """Byte-level BPE with digits split one by one (arithmetic is the point of GSM8K)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE, special_tokens=[BOS, EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer)
    assert tok.token_to_id(BOS) == BOS_ID and tok.token_to_id(EOS) == EOS_ID
    # Like Llama tokenizers, encoding with special tokens prepends BOS, so plain-text prompts
    # (vLLM, OpenAI completions) get exactly the token layout the models were trained on.
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, BOS_ID)])
    return tok


# For /v1/chat/completions: a user turn becomes the training prompt, an assistant turn the answer.
CHAT_TEMPLATE = (
    "{% for m in messages %}{% if m['role'] == 'user' %}Question: {{ m['content'] }}\nAnswer:"
    "{% elif m['role'] == 'assistant' %} {{ m['content'] }}{{ eos_token }}\n"
    "{% else %}{{ m['content'] }}\n{% endif %}{% endfor %}")


def wrap_tokenizer(tok):
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=BOS, eos_token=EOS, pad_token=EOS,
        model_max_length=2048, chat_template=CHAT_TEMPLATE)


def load_tokenizer(model_dir: Path = TARGET_DIR):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_dir)


def encode_docs(tokenizer, texts: list[str]) -> list[list[int]]:
    """Token ids of whole documents whose BOS/EOS are written in the text itself."""
    return tokenizer(texts, add_special_tokens=False)["input_ids"]


def pack(docs: list[list[int]], seq_len: int = SEQ_LEN, seed: int | None = SEED) -> torch.Tensor:
    """Shuffle documents, concatenate them and cut into rows. Returns [N, seq_len] int64."""
    order = list(range(len(docs)))
    if seed is not None:
        random.Random(seed).shuffle(order)
    stream = [t for i in order for t in docs[i]]
    num_rows = len(stream) // seq_len
    return torch.tensor(stream[: num_rows * seq_len]).view(num_rows, seq_len)


def make_config(name: str):
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=VOCAB_SIZE, max_position_embeddings=2048, tie_word_embeddings=True,
        bos_token_id=BOS_ID, eos_token_id=EOS_ID, pad_token_id=EOS_ID,
        rms_norm_eps=1e-5, dtype="float32", **ARCHS[name])


def new_model(name: str):
    from transformers import LlamaForCausalLM

    torch.manual_seed(SEED)
    return LlamaForCausalLM(make_config(name)).float()


def load_model(model_dir: Path):
    from transformers import LlamaForCausalLM

    return LlamaForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()


def save_model(model, model_dir: Path) -> None:
    """float32 safetensors plus a generation_config.json holding only BOS/EOS.

    vLLM takes sampling defaults from generation_config.json, so anything beyond the special
    token ids (temperature, top_p ...) would silently change every benchmark's sampling.
    """
    model_dir.mkdir(parents=True, exist_ok=True)
    model.config.dtype = torch.float32
    model.float().save_pretrained(model_dir, safe_serialization=True)
    gen = {"bos_token_id": BOS_ID, "eos_token_id": EOS_ID}
    (model_dir / "generation_config.json").write_text(json.dumps(gen, indent=2) + "\n")


def num_params(model) -> int:
    """Unique parameters (the tied embedding counts once)."""
    return sum(p.numel() for p in model.parameters())
