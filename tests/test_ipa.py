"""IPA normalisation to ZIPA's inventory: hand-worked examples in several languages and scripts."""

import unicodedata
from collections import Counter

import pytest

from zipa.text.ipa import (
    inventory,
    normalize_ipa,
    normalize_ipa_report,
    num_tokens,
    phone_counts,
    remove_diacritics,
)
from zipa.text.tokenizer import Tokenizer

# (input, normalised output, dropped out-of-inventory symbols). Inputs are spelt with escapes
# where the code points matter.
EXAMPLES = [
    # English, espeak-ng style: stress removed, ɡ -> g, ɚ -> ə˞, length kept.
    ("həlˈoʊ wˈɜːld", "həloʊ wɜːld", {}),
    ("bˈɪɡ bˈʌɾɚ", "bɪg bʌɾə\u02de", {}),
    ("[ˈt͡ʃɪ.kən]", "tʃɪkən", {}),  # brackets, tie bar, syllable mark
    # French nasal vowels, precomposed õ/ã become vowel + combining tilde (in the inventory).
    ("bɔ̃ʒˈuʁ, ʒə- mˈɑ̃ʒ", "bɔ\u0303ʒuʁ ʒə mɑ\u0303ʒ", {}),
    ("b\u00f5 p\u00e3", "bo\u0303 pa\u0303", {}),
    # German: precomposed ç survives NFD; ASCII colon is length; the non-syllabic mark is not in
    # the inventory and is reported.
    ("ɪ\u00e7 mˈœ\u00e7tə", "ɪ\u00e7 mœ\u00e7tə", {}),
    ("ˈʃtʁa:sə", "ʃtʁaːsə", {}),
    ("t͡saɪ\u032ft", "tsaɪt", {"\u032f": 1}),
    # Mandarin, espeak-ng output with tone digits; Chao tone letters; superscript tones.
    ("wˈo2 mˈə1n tɕˈi5n", "wo mən tɕin", {}),
    ("ma˥˩ ma²¹⁴", "ma ma", {}),
    ("ʂʅ tsɿ", "ʂɻ\u0329 tsɹ\u0329", {}),  # Sinological apical vowels
    # Hindi aspirates and breathy voice (ʱ -> ʰ, the inventory's only release mark).
    ("bʰˈaːi ɡʰˈʌɾ", "bʰaːi gʰʌɾ", {}),
    ("bʱaːi", "bʰaːi", {}),
    # Arabic pharyngeals, glottal stop, pharyngealisation.
    ("ʕarabiːja ħamd ʔalsˤabaːħ", "ʕarabiːja ħamd ʔalsˤabaːħ", {}),
    # Russian palatalisation.
    ("ˈja ɭʲubɭʲˈu", "ja ɭʲubɭʲu", {}),
    # Yoruba: tone accents are removed on purpose; the dot below (a vowel-quality mark of the
    # orthography) is not IPA and is reported.
    ("àárọ̀", "aaro", {"\u0323": 1}),
    # Ejectives: apostrophes after a consonant; a leading apostrophe is a typed stress mark.
    ("k'a t\u2019a 'kata", "kʼa tʼa kata", {}),
    # Ligatures, velarised l, look-alikes, centralisation diaeresis (ZIPA: ɪ̈ -> ɪ).
    ("ʧa ʤa ʦa ɫ", "tʃa dʒa tsa l\u0334", {}),
    ("ɪ\u0308 ᵻ ä", "ɪ ɪ a", {}),
    # Out-of-inventory symbols are dropped and reported.
    ("o\u031e ABC", "o", {"\u031e": 1, "A": 1, "B": 1, "C": 1}),
    # Whitespace and punctuation: single spaces between words.
    ("  a\t\tb \n c!  ", "a b c", {}),
    ("", "", {}),
]


@pytest.mark.parametrize("text,expected,dropped", EXAMPLES)
def test_examples(text, expected, dropped):
    out, report = normalize_ipa_report(text)
    assert out == expected
    assert report == Counter(dropped)
    assert normalize_ipa(text) == expected


@pytest.fixture(scope="module")
def tokenizer():
    return Tokenizer.default()


def test_inventory_is_the_tokenizer_pieces(tokenizer):
    pieces = {tokenizer.id_to_piece(i) for i in range(4, tokenizer.vocab_size)}
    assert inventory() == pieces
    assert len(inventory()) == 123
    # ZIPA's inventory spells the voiced velar stop with ASCII g, not U+0261.
    assert "g" in inventory() and "\u0261" not in inventory()


@pytest.mark.parametrize("text,expected,dropped", EXAMPLES)
def test_output_in_inventory_and_tokenizes_without_unk(text, expected, dropped, tokenizer):
    out = normalize_ipa(text)
    assert all(ch in inventory() or ch == " " for ch in out)
    ids = tokenizer.encode(out)
    assert tokenizer.unk_id not in ids
    assert len(ids) == num_tokens(out)


@pytest.mark.parametrize("text,expected,dropped", EXAMPLES)
def test_idempotent(text, expected, dropped):
    once = normalize_ipa(text)
    assert normalize_ipa(once) == once
    assert normalize_ipa_report(once)[1] == Counter()
    twice = normalize_ipa(text, remove_diacritics=True)
    assert normalize_ipa(twice, remove_diacritics=True) == twice


# ZIPA's --remove-diacritics pattern (zipformer_crctc/train.py, diacritic_pattern), as code points.
ZIPA_DIACRITICS = set(
    "\u02b0\u02b2\u02b7\u02bc\u02d0\u02de\u02e0\u02e4"
    "\u0325\u0303\u031a\u0329\u032a\u0334\u033a"
)


def zipa_remove_diacritics(text):
    return "".join(ch for ch in text if ch not in ZIPA_DIACRITICS)


@pytest.mark.parametrize(
    "text,expected",
    [
        ("bʰˈaːi ɡʰˈʌɾ", "bai gʌɾ"),
        ("ʔalsˤabaːħ", "ʔalsabaħ"),
        ("bɔ̃ʒˈuʁ", "bɔʒuʁ"),
        ("kʼa tʷa pʲa ɫ bʌɾɚ", "ka ta pa l bʌɾə"),
        ("n̩ t̪ d̺ k̚ ŋ̥ ɣˠ", "n t d k ŋ ɣ"),
    ],
)
def test_remove_diacritics(text, expected):
    out = normalize_ipa(text, remove_diacritics=True)
    assert out == expected
    # The same as ZIPA's mapping applied to the normalised text.
    assert out == zipa_remove_diacritics(normalize_ipa(text))
    assert remove_diacritics(normalize_ipa(text)) == expected


def test_inventory_diacritics_are_zipas_diacritics():
    # After normalisation the only marks left are the inventory's, and those are exactly the
    # ones ZIPA's --remove-diacritics drops.
    marks = {ch for ch in inventory() if unicodedata.category(ch) in ("Mn", "Lm", "Sk")}
    assert marks == ZIPA_DIACRITICS


def test_removed_marks_are_not_reported():
    out, report = normalize_ipa_report("ˈa.ˌb t͡s ma˥ ma3 ä\u200d")
    assert out == "ab ts ma ma a"
    assert report == Counter()


def test_phone_counts_and_num_tokens():
    counts = phone_counts(["tʰa ta", "aː"])
    assert counts == Counter({"a": 3, "t": 2, "ʰ": 1, "ː": 1})
    assert num_tokens("tʰa ta") == 7  # ▁ t ʰ a ▁ t a
    assert num_tokens("") == 0
