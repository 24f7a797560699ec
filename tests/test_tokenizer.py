"""The project's tokenizer must be the original ZIPA tokenizer, id for id."""

import json
from pathlib import Path

import pytest
import sentencepiece as spm

from zipa.text.tokenizer import Tokenizer, default_bpe_model_path

REPO = Path(__file__).resolve().parents[1]
OURS = REPO / "ipa_simplified"
REFERENCE = REPO.parent / "shared" / "reference" / "ipa_simplified"

needs_reference = pytest.mark.skipif(
    not REFERENCE.is_dir(), reason="reference data (../shared) absent"
)

SAMPLES = [
    "a",
    "həloʊ wɜːld",
    "ʃ t ɹ ɛ ŋ θ",
    "tʰiː kʰæt sæt ɒn ðə mæt",
    "ɲãʊ̃ pɾeˠʃ̪ʷ ʔaː",  # nasal tilde, dental/labialised/velarised diacritics
    "  leading and trailing spaces  ",
    "abc XYZ 123 ˈʃ",  # upper case, digits and stress are out of the inventory
    "ǀ ǁ ǂ ǃ ʘ ɓ ᶑ ⱱ",
]


@pytest.fixture(scope="module")
def ours():
    return Tokenizer.default()


@pytest.fixture(scope="module")
def reference():
    return spm.SentencePieceProcessor(model_file=str(REFERENCE / "unigram_127.model"))


PACKAGED = REPO / "zipa" / "assets" / "ipa_simplified"


def test_default_path_is_the_packaged_model():
    assert default_bpe_model_path() == PACKAGED / "unigram_127.model"


def test_root_tokenizer_folder_is_identical_to_the_packaged_one():
    """The icefall layout's ipa_simplified/ and the package's copy are the same files, byte for byte."""
    names = sorted(p.name for p in OURS.iterdir())
    assert names == sorted(p.name for p in PACKAGED.iterdir() if p.name != "__pycache__")
    assert names == ["phone_set.txt", "tokens.jsonl", "tokens.txt", "unigram_127.model", "unigram_127.vocab"]
    for name in names:
        assert (OURS / name).read_bytes() == (PACKAGED / name).read_bytes(), name


def test_special_ids(ours):
    assert ours.vocab_size == 127
    assert ours.blank_id == 0
    assert [ours.id_to_piece(i) for i in range(4)] == ["<blk>", "<sos/eos>", "<unk>", "▁"]
    assert ours.unk_id == 2


def test_every_inventory_phone_is_one_token(ours):
    phones = (OURS / "phone_set.txt").read_text(encoding="utf-8").split()
    assert len(phones) == 123
    for phone in phones:
        assert ours.piece_to_id(phone) >= 4, phone


@needs_reference
def test_pieces_ids_scores_equal_reference(ours, reference):
    assert ours.vocab_size == reference.get_piece_size()
    for i in range(reference.get_piece_size()):
        assert ours.id_to_piece(i) == reference.id_to_piece(i), i
        assert ours.sp.get_score(i) == reference.get_score(i), i
        assert ours.sp.is_unknown(i) == reference.is_unknown(i)
        assert ours.sp.is_control(i) == reference.is_control(i)


@needs_reference
def test_model_files_equal_reference():
    for name in ["unigram_127.model", "unigram_127.vocab", "tokens.txt", "tokens.jsonl"]:
        assert (OURS / name).read_bytes() == (REFERENCE / name).read_bytes(), name


@needs_reference
@pytest.mark.parametrize("text", SAMPLES)
def test_encode_decode_agree_with_reference(ours, reference, text):
    ids = ours.encode(text)
    assert ids == reference.encode(text, out_type=int)
    assert ours.decode(ids) == reference.decode(ids)


def test_roundtrip_within_inventory(ours):
    text = "tʰiː kʰæt sæt ɒn ðə mæt"
    ids = ours.encode(text)
    assert ours.unk_id not in ids
    assert ours.decode(ids) == text
    assert ours.decode_batch([ids, ours.encode("a b")]) == [text, "a b"]


def test_decode_accepts_tensors_and_arrays(ours):
    import numpy as np
    import torch

    ids = ours.encode("ʃ ɪ p")
    assert ours.decode(torch.tensor(ids)) == "ʃ ɪ p"
    assert ours.decode(np.array(ids)) == "ʃ ɪ p"


def test_tokens_txt_lists_model_pieces(ours):
    lines = (OURS / "tokens.txt").read_text(encoding="utf-8").splitlines()
    assert len(lines) == ours.vocab_size
    for line in lines:
        symbol, idx = line.split(" ")
        assert ours.id_to_piece(int(idx)) == symbol


def test_tokens_jsonl_indexes_inventory():
    mapping = json.loads((OURS / "tokens.jsonl").read_text(encoding="utf-8"))
    phones = (OURS / "phone_set.txt").read_text(encoding="utf-8").split()
    assert list(mapping) == ["<eps>", *phones, "<star>", "SIL", "SPN", "<unk>"]
    assert list(mapping.values()) == list(range(len(mapping)))


def test_missing_model_file_names_the_path(tmp_path):
    missing = tmp_path / "nope.model"
    with pytest.raises(FileNotFoundError, match="nope.model"):
        Tokenizer.from_file(missing)


def test_make_tokenizer_regenerates_the_committed_files(tmp_path):
    import subprocess
    import sys

    subprocess.run(
        [sys.executable, str(REPO / "local" / "make_tokenizer.py"), "--out-dir", str(tmp_path)],
        check=True,
        capture_output=True,
    )
    for name in ["unigram_127.vocab", "tokens.txt", "tokens.jsonl"]:
        assert (tmp_path / name).read_bytes() == (OURS / name).read_bytes(), name
    regenerated = Tokenizer.from_file(tmp_path / "unigram_127.model")
    assert regenerated.encode("ɲãʊ̃ pɾeˠ") == Tokenizer.default().encode("ɲãʊ̃ pɾeˠ")
