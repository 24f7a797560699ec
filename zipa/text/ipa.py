"""IPA normalisation to ZIPA's 127-token inventory.

ZIPA's tokenizer knows 123 IPA characters (``ipa_simplified/phone_set.txt``) plus the word
boundary. Text from other tools (espeak-ng, epitran, hand transcriptions, other corpora) uses
more: stress and tone marks, tie bars, ligatures, look-alike code points. :func:`normalize_ipa`
maps such text onto the inventory, one documented table at a time:

1. **Unicode NFD**, so that precomposed letters (``ã``, ``é``, ``ü``) become a base letter plus
   combining marks that the tables below can treat one by one. Inventory characters that NFD
   splits (only ``ç``) are recomposed afterwards.
2. **Equivalences** (:data:`EQUIVALENTS`): one code point → its inventory spelling, where the two
   mean the same sound: ``ɡ``→``g`` (the inventory has ASCII ``g``; ZIPA's own data preparation
   did the same), ASCII ``:``→``ː``, ``ɚ``→``ə˞``, ``ɝ``→``ɜ˞``, ``ɫ``→``l̴`` (the IPA's velarised
   ``l`` *is* ``l`` + tilde overlay), affricate ligatures ``ʧ ʤ ʦ ʣ ʨ ʥ``→``tʃ dʒ ts dz tɕ dʑ``,
   Greek look-alikes ``α ε ɩ``→``ɑ ɛ ɪ``, ``ǝ``(turned e)→``ə``, ``ᵻ ᵿ``→``ɪ ʊ`` (espeak's
   reduced vowels; ZIPA mapped the centralised ``ɪ̈ ʊ̈`` to ``ɪ ʊ``), Sinological apical vowels
   ``ɿ ʅ``→``ɹ̩ ɻ̩``, breathy release ``ʱ``→``ʰ`` (the inventory's only release mark),
   prenasalisation ``ᵐ ⁿ ᵑ``→``m n ŋ``, the above-forms of two inventory diacritics (``̍``→``̩``,
   ``̊``→``̥``).
3. **Apostrophes**: ``'`` and ``’`` right after a consonant are the ejective mark ``ʼ``;
   elsewhere (word-initially, after a vowel) they are typed stress marks and are removed.
4. **Removed marks** (:data:`REMOVED_MARKS`, dropped on purpose, not reported): stress ``ˈ ˌ``,
   syllable break ``.``, tie bars ``͡ ͜`` and linking ``‿``, hyphens, tones (tone letters
   ``˥˦˧˨˩`` and their Chao bars, ASCII/superscript/subscript digits as espeak and Sinological
   transcriptions write tones, combining tone accents ``̀ ́ ̂ ̄ ̋ ̌ ̏`` and the contour marks
   U+1DC4–U+1DCB, up/downstep ``ꜛ ꜜ``, intonation arrows), the centralisation diaeresis ``̈``
   (ZIPA's data preparation mapped ``ä ë ï ö ü ÿ ɪ̈ ...`` to their base letters), and invisible
   characters (zero-width joiners, soft hyphen, BOM).
5. **Boundaries** (:data:`BOUNDARY_MARKS`): whitespace, punctuation, brackets and slashes
   around transcriptions, prosodic bars ``| ‖`` become a word boundary.
6. **Everything else outside the inventory** is dropped *and reported*: the ``Counter`` of
   :func:`normalize_ipa_report` counts each such character (e.g. ``̞`` lowering, ``̯``
   non-syllabic, ``ˑ`` half-long, capital letters). ``local/text_stats.py`` prints them per
   language so that a user sees what their data loses.
7. Words are separated by single spaces; no leading or trailing space.

``remove_diacritics=True`` then applies ZIPA's ``--remove-diacritics`` mapping (the
``diacritic_pattern`` of its ``train.py``/``ctc_decode.py``): drop ``ʰ ʲ ʷ ʼ ː ˞ ˠ ˤ`` and the
combining diacritics. After steps 1–6 the only combining marks left are the inventory's
``̥ ̩ ̴ ̪ ̺ ̃ ̚``, which are exactly those ZIPA's pattern lists, so this matches ZIPA's mapping on
normalised text.

The output encodes with the ZIPA tokenizer without ``<unk>``, and normalisation is idempotent.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path

from zipa.assets import PHONE_SET

__all__ = [
    "inventory",
    "phone_set_path",
    "num_tokens",
    "normalize_ipa",
    "normalize_ipa_report",
    "normalize_ipa_changes",
    "remove_diacritics",
    "phone_counts",
    "EQUIVALENTS",
    "REMOVED_MARKS",
    "BOUNDARY_MARKS",
    "DIACRITICS",
]

# Step 2: one code point -> its spelling in the inventory.
EQUIVALENTS: dict[str, str] = {
    "\u0261": "g",  # ɡ LATIN SMALL LETTER SCRIPT G -> ASCII g, the inventory's spelling
    ":": "\u02d0",  # ASCII colon -> ː length mark
    "\ua789": "\u02d0",  # ꞉ MODIFIER LETTER COLON -> ː
    "\u025a": "\u0259\u02de",  # ɚ -> ə˞
    "\u025d": "\u025c\u02de",  # ɝ -> ɜ˞
    "\u026b": "l\u0334",  # ɫ -> l̴ (velarised/pharyngealised l)
    "\u02a7": "t\u0283",  # ʧ -> tʃ
    "\u02a4": "d\u0292",  # ʤ -> dʒ
    "\u02a6": "ts",  # ʦ -> ts
    "\u02a3": "dz",  # ʣ -> dz
    "\u02a8": "t\u0255",  # ʨ -> tɕ
    "\u02a5": "d\u0291",  # ʥ -> dʑ
    "\u03b1": "\u0251",  # Greek α -> ɑ
    "\u03b5": "\u025b",  # Greek ε -> ɛ
    "\u0269": "\u026a",  # ɩ (iota) -> ɪ
    "\u01dd": "\u0259",  # ǝ TURNED E -> ə
    "\u1d7b": "\u026a",  # ᵻ -> ɪ (espeak's reduced vowel; ZIPA: ɪ̈ -> ɪ)
    "\u1d7f": "\u028a",  # ᵿ -> ʊ (ZIPA: ʊ̈ -> ʊ)
    "\u027f": "\u0279\u0329",  # ɿ apical vowel after dental sibilants -> ɹ̩
    "\u0285": "\u027b\u0329",  # ʅ apical vowel after retroflex sibilants -> ɻ̩
    "\u02b1": "\u02b0",  # ʱ breathy release -> ʰ
    "\u1d50": "m",  # ᵐ prenasalisation -> m
    "\u207f": "n",  # ⁿ -> n
    "\u1d51": "\u014b",  # ᵑ -> ŋ
    "\u030d": "\u0329",  # combining vertical line above -> below (syllabic)
    "\u030a": "\u0325",  # combining ring above -> below (voiceless)
}

# Step 3.
APOSTROPHES = "'\u2019"

# Step 4: removed on purpose, not reported.
STRESS_MARKS = "\u02c8\u02cc"  # ˈ ˌ
SYLLABLE_MARKS = ".\u203f-\u2010\u2011"  # . ‿ and hyphens
TIE_BARS = "\u0361\u035c"  # ͡ ͜
TONE_MARKS = (
    "\u02e5\u02e6\u02e7\u02e8\u02e9"  # ˥˦˧˨˩
    + "".join(chr(c) for c in range(0xA708, 0xA717))  # ꜈..ꜗ Chao tone bars / dotted tone letters
    + "\ua71b\ua71c"  # ꜛ ꜜ up/downstep
    + "0123456789"
    + "\u2070\u00b9\u00b2\u00b3\u2074\u2075\u2076\u2077\u2078\u2079"  # ⁰..⁹
    + "".join(chr(c) for c in range(0x2080, 0x208A))  # ₀..₉
    + "\u0300\u0301\u0302\u0304\u030b\u030c\u030f"  # combining grave, acute, ^, macron, ...
    + "".join(chr(c) for c in range(0x1DC4, 0x1DCC))  # combining tone contours
    + "\u2197\u2198"  # ↗ ↘ global rise/fall
)
CENTRALISATION = "\u0308"  # combining diaeresis
INVISIBLE = "\u200b\u200c\u200d\u2060\u00ad\ufeff"
REMOVED_MARKS = frozenset(STRESS_MARKS + SYLLABLE_MARKS + TIE_BARS + TONE_MARKS + CENTRALISATION + INVISIBLE)

# Step 5: become a word boundary.
BOUNDARY_MARKS = frozenset(',;!?"()[]{}/\\|\u2016<>\u2026\u00ab\u00bb\u201c\u201d\u201e\u2013\u2014\u3001\u3002\uff0c')

# ZIPA's --remove-diacritics: these modifier letters plus all combining marks U+0300..U+036F.
DIACRITICS = frozenset("\u02b0\u02b2\u02b7\u02bc\u02d0\u02de\u02e0\u02e4")


def phone_set_path() -> Path:
    """``ipa_simplified/phone_set.txt``, the inventory the tokenizer is generated from."""
    return PHONE_SET


@lru_cache(maxsize=1)
def inventory() -> frozenset[str]:
    """The single characters of ZIPA's phone inventory (``ipa_simplified/phone_set.txt``; the
    tokenizer has exactly one piece for each)."""
    path = phone_set_path()
    chars = set()
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        sym = line.strip()
        if not sym:
            continue
        if len(sym) != 1:
            raise ValueError(f"{path}:{n}: inventory symbols are single characters, got {sym!r}")
        chars.add(sym)
    return frozenset(chars)


@lru_cache(maxsize=1)
def _tables() -> tuple[frozenset[str], dict[str, str], re.Pattern]:
    inv = inventory()
    # Inventory characters that NFD splits (ç -> c + cedilla): recompose after step 1.
    recompose = {unicodedata.normalize("NFD", ch): ch for ch in inv if unicodedata.normalize("NFD", ch) != ch}
    consonants = "".join(sorted(ch for ch in inv if unicodedata.category(ch) in ("Ll", "Lo") and ch not in _VOWELS))
    ejective = re.compile(f"(?<=[{re.escape(consonants)}])[{APOSTROPHES}]")
    for ch in EQUIVALENTS.values():
        missing = [c for c in ch if c not in inv]
        assert not missing, f"EQUIVALENTS target {ch!r} is outside the inventory"
    return inv, recompose, ejective


_VOWELS = frozenset("iyɨʉɯuɪʏʊeøɘɵɤoəɛœɜɞʌɔæɐaɶɑɒ")


def _is_combining_diacritic(ch: str) -> bool:
    return 0x0300 <= ord(ch) <= 0x036F


def normalize_ipa_report(text: str, remove_diacritics: bool = False) -> tuple[str, Counter]:
    """Normalise ``text`` to the inventory; also return a ``Counter`` of the out-of-inventory
    characters that were dropped (not the marks that are removed on purpose: stress, syllable,
    tie, tone, centralisation; see the module docstring)."""
    return _normalize(text, remove_diacritics, None)


def normalize_ipa_changes(text: str, remove_diacritics: bool = False) -> tuple[str, Counter, Counter]:
    """:func:`normalize_ipa_report` that also counts what the tables changed on purpose: a
    ``Counter`` of ``(symbol, replacement)`` pairs. ``("ɡ", "g")``: an equivalence (step 2);
    ``("'", "ʼ")``: an apostrophe read as the ejective mark (step 3); ``("ˈ", "")``: a removed
    mark (step 4, and with ``remove_diacritics`` each diacritic it strips); ``(",", " ")``:
    a mark that became a word boundary (step 5; whitespace itself is not counted). Symbols are
    counted after NFD, so ``é`` shows as its acute accent ``("\u0301", "")``."""
    changes: Counter = Counter()
    result, dropped = _normalize(text, remove_diacritics, changes)
    return result, dropped, changes


def _normalize(text: str, remove_diacritics: bool, changes: Counter | None) -> tuple[str, Counter]:
    """Steps 1-7 (and ``remove_diacritics``); counts the changes into ``changes`` when given."""
    inv, recompose, ejective = _tables()
    s = unicodedata.normalize("NFD", text)
    if changes is not None:
        changes.update((ch, EQUIVALENTS[ch]) for ch in s if ch in EQUIVALENTS)
    s = "".join(EQUIVALENTS.get(ch, ch) for ch in s)
    for split, whole in recompose.items():
        s = s.replace(split, whole)
    if changes is not None:
        changes.update((m.group(), "\u02bc") for m in ejective.finditer(s))
    s = ejective.sub("\u02bc", s)
    dropped: Counter = Counter()
    out = []
    for ch in s:
        if ch in inv:
            out.append(ch)
        elif ch.isspace() or ch in BOUNDARY_MARKS:
            out.append(" ")
            if changes is not None and not ch.isspace():
                changes[(ch, " ")] += 1
        elif ch in REMOVED_MARKS or ch in APOSTROPHES:
            if changes is not None:
                changes[(ch, "")] += 1
        else:
            dropped[ch] += 1
    result = " ".join("".join(out).split())
    if remove_diacritics:
        if changes is not None:
            changes.update((ch, "") for ch in result if ch in DIACRITICS or _is_combining_diacritic(ch))
        result = _remove_diacritics(result)
    return result, dropped


def normalize_ipa(text: str, remove_diacritics: bool = False) -> str:
    """Normalise ``text`` to ZIPA's inventory (see the module docstring for the tables)."""
    return normalize_ipa_report(text, remove_diacritics)[0]


def _remove_diacritics(text: str) -> str:
    kept = "".join(ch for ch in text if ch not in DIACRITICS and not _is_combining_diacritic(ch))
    return " ".join(kept.split())


def remove_diacritics(text: str) -> str:
    """ZIPA's ``--remove-diacritics`` on already normalised text: drop ``ʰ ʲ ʷ ʼ ː ˞ ˠ ˤ`` and
    combining diacritics (U+0300–U+036F)."""
    return _remove_diacritics(text)


def num_tokens(text: str) -> int:
    """Tokens the ZIPA tokenizer makes of normalised ``text``: one per character plus one word
    boundary ``▁`` per word (the model has single-character pieces only)."""
    words = text.split()
    return sum(len(w) for w in words) + len(words)


def phone_counts(texts: Iterable[str]) -> Counter:
    """Character counts (phones and diacritics, no spaces) over already normalised texts."""
    counts: Counter = Counter()
    for text in texts:
        counts.update(ch for ch in text if not ch.isspace())
    return counts


# Base characters of each phone class (IPA; affricates count as stops, by their first letter).
PHONE_CLASSES: dict[str, str] = {
    "stops": "pbtdʈɖcɟkgɡqɢʔ",
    "fricatives": "fvθðszʃʒʂʐçʝxɣχʁħʕhɦɸβɕʑ",
    "nasals": "mɱnɳɲŋɴ",
    "vowels": "aeiouyɑɒæɛɜəɐɪʊʌɔøœɵɤɯɨʉɘɞɶ",
    "approximants": "lɭʎʟɫɹɻjwʋɰɥrɾɽʀɺ",
}
_CLASS_OF = {ch: name for name, chars in PHONE_CLASSES.items() for ch in chars}


def phone_class(label: str) -> str:
    """``stops``, ``fricatives``, ``nasals``, ``vowels``, ``approximants`` (liquids, glides,
    taps and trills), or ``other``, by the phone's first character."""
    return _CLASS_OF.get(label[:1], "other")
