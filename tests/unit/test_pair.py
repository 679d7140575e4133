"""The draft must share the target's tokenizer: mismatches are startup errors."""

import json
import logging
import shutil

import pytest

from tests.conftest import DRAFT_DIR, TARGET_DIR
from vllm_seed.pair import check_same_tokenizer, check_vocab_size


def test_the_embedded_pair_shares_its_tokenizer():
    check_same_tokenizer(str(TARGET_DIR), str(DRAFT_DIR))


def swapped_tokenizer_dir(tmp_path, a="the", b="and"):
    out = tmp_path / "draft"
    shutil.copytree(DRAFT_DIR, out)
    tok = json.loads((out / "tokenizer.json").read_text())
    vocab = tok["model"]["vocab"]
    for key in (a, b):  # byte-level BPE spells a leading space as Ġ
        assert f"Ġ{key}" in vocab, key
    vocab[f"Ġ{a}"], vocab[f"Ġ{b}"] = vocab[f"Ġ{b}"], vocab[f"Ġ{a}"]
    (out / "tokenizer.json").write_text(json.dumps(tok))
    return out


def test_a_draft_with_another_tokenizer_is_refused_naming_the_token(tmp_path):
    draft = swapped_tokenizer_dir(tmp_path)
    with pytest.raises(ValueError, match=r"different tokenizer.*token 'Ġ(the|and)' has id \d+ in the target, \d+ in the draft"):
        check_same_tokenizer(str(TARGET_DIR), str(draft))


def test_a_draft_with_other_special_tokens_is_refused(tmp_path):
    draft = tmp_path / "draft"
    shutil.copytree(DRAFT_DIR, draft)
    config = json.loads((draft / "tokenizer_config.json").read_text())
    target_eos = config["eos_token"]
    config["eos_token"] = config["bos_token"]
    (draft / "tokenizer_config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="eos_token_id is"):
        check_same_tokenizer(str(TARGET_DIR), str(draft))
    assert target_eos != config["bos_token"]


def test_a_draft_without_tokenizer_files_is_assumed_to_match_with_a_warning(random_llama_dir, caplog):
    with caplog.at_level(logging.WARNING, logger="vllm.seed"):
        check_same_tokenizer(str(TARGET_DIR), random_llama_dir)
    assert "ships no tokenizer" in caplog.text


def test_vocab_size_mismatch_names_both_sizes():
    with pytest.raises(ValueError, match="has vocab size 64 but the target has 4096"):
        check_vocab_size("some/draft", 64, 4096)
    check_vocab_size("some/draft", 4096, 4096)
