"""Orthographic text → IPA in ZIPA's inventory, for a named language.

Two back ends:

* **espeak-ng** (default; bundled through ``espeakng-loader``, 141 voices): ``lang`` is an
  espeak voice or language code (``"en-us"``, ``"fr"``, ``"cmn"``, ``"sw"``), or one of the
  ISO 639-3 codes in :data:`ISO3_TO_ESPEAK` (``"eng"``, ``"spa"``, ``"cmn"``, ...).
* **epitran** (optional, ``pip install epitran``): ``lang`` is an epitran code,
  language-script such as ``"yor-Latn"``, ``"amh-Ethi"``, ``"zul-Latn"``. Useful for languages
  espeak-ng lacks (Yoruba, Hausa, Zulu, Somali, Kinyarwanda, ...); its rules are
  grapheme-based, so for languages espeak-ng has a dictionary for (English, Hindi schwa
  deletion, Arabic) espeak-ng is the better choice. Epitran's English and Mandarin need
  external downloads (flite, CEDICT) and are not supported offline.

espeak-ng's IPA carries a few conventions of its own that :func:`clean_espeak` turns into
standard IPA before :func:`zipa.text.ipa.normalize_ipa` maps it to the inventory:

* language-switch flags such as ``(en)`` ... ``(cmn)`` (words read with another voice) are
  removed, the phones kept; the ``"``, ``^`` and ``-`` that some phoneme names carry are removed;
* tonal voices (Mandarin, Cantonese, Hakka, Vietnamese, ...) print each syllable's tone as the
  first digit of its contour after the vowel, with ``3`` spelt ``ɜ`` (espeak's ASCII-to-IPA
  table); that ``ɜ`` is removed like the other tone digits;
* Mandarin: ``ts.h ts. s.`` → ``ʈʂʰ ʈʂ ʂ`` (``.`` marks retroflexion, not a syllable), the
  apical vowels ``i.`` → ``ɻ̩`` and ``i̪`` → ``ɹ̩`` (as ``ʅ ɿ`` in :mod:`zipa.text.ipa`), and
  aspiration written ``h`` after a stop or affricate → ``ʰ``.

Cantonese output is Jyutping-like rather than IPA (``eo``, ``oe``, ``yu``, ``aa``); use it
with care.
"""

from __future__ import annotations

import re
from collections import Counter
from functools import lru_cache

from zipa.text import espeak
from zipa.text.ipa import normalize_ipa_report

__all__ = ["g2p", "g2p_report", "check_language", "clean_espeak", "resolve_voice", "ISO3_TO_ESPEAK"]

# ISO 639-3 (and a few common) codes -> espeak-ng voices.
ISO3_TO_ESPEAK: dict[str, str] = {
    "eng": "en-us",
    "spa": "es",
    "deu": "de",
    "fra": "fr-fr",
    "ita": "it",
    "por": "pt",
    "rus": "ru",
    "ukr": "uk",
    "pol": "pl",
    "ces": "cs",
    "nld": "nl",
    "swe": "sv",
    "hin": "hi",
    "ben": "bn",
    "urd": "ur",
    "mar": "mr",
    "tam": "ta",
    "tel": "te",
    "cmn": "cmn",
    "zho": "cmn",
    "zh": "cmn",
    "yue": "yue",
    "jpn": "ja",
    "kor": "ko",
    "vie": "vi",
    "tha": "th",
    "ind": "id",
    "msa": "ms",
    "swa": "sw",
    "swh": "sw",
    "tur": "tr",
    "fin": "fi",
    "est": "et",
    "hun": "hu",
    "ara": "ar",
    "heb": "he",
    "fas": "fa",
    "pes": "fa",
    "amh": "am",
    "kat": "ka",
    "eus": "eu",
    "ell": "el",
}

_TONAL_PREFIXES = ("cmn", "yue", "hak", "vi", "th", "my", "shn")
_VOWEL_LIKE = "aeiouyɑɐəɛæɔɪʊʌɤɯøœɵɨʉɒː\u0303\u032a.\\-"
_TONE_E = re.compile(f"(?<=[{_VOWEL_LIKE}])ɜ(?!ː)")
_SWITCH_FLAG = re.compile(r"\([a-z]{2,3}(?:-[a-z0-9-]+)?\)", re.IGNORECASE)
_MANDARIN = [
    ("ts.h", "ʈʂʰ"),
    ("ts.", "ʈʂ"),
    ("s.", "ʂ"),
    ("i.", "ɻ̩"),
    ("i\u032a", "ɹ̩"),
]
_ASPIRATION_H = re.compile(r"(?<=[ptkɕʂs])h")


def _is_tonal(voice: str) -> bool:
    return voice.lower().split("+")[0].split("/")[-1].startswith(_TONAL_PREFIXES)


def _is_mandarin(voice: str) -> bool:
    return voice.lower().split("+")[0].split("/")[-1].startswith("cmn")


def clean_espeak(raw: str, voice: str) -> str:
    """espeak-ng's IPA conventions → standard IPA (see the module docstring)."""
    s = _SWITCH_FLAG.sub("", raw)
    if _is_tonal(voice):
        s = _TONE_E.sub("", s)
    if _is_mandarin(voice):
        for old, new in _MANDARIN:
            s = s.replace(old, new)
        s = _ASPIRATION_H.sub("ʰ", s)
    s = s.replace('"', "").replace("^", "").replace("-", "")
    return s


def resolve_voice(lang: str) -> str:
    """The espeak-ng voice for ``lang`` (an ISO 639-3 code from :data:`ISO3_TO_ESPEAK` or an
    espeak voice/language code, kept as is)."""
    return ISO3_TO_ESPEAK.get(lang.lower(), lang)


def _is_epitran_code(lang: str) -> bool:
    # epitran codes are language-Script, e.g. "yor-Latn", "amh-Ethi".
    return bool(re.fullmatch(r"[a-z]{3}-[A-Z][a-z]{3}(?:-[a-z]+)?", lang))


@lru_cache(maxsize=32)
def _epitran(code: str):
    try:
        import epitran
    except ImportError as e:
        raise RuntimeError(f"{code!r} is an epitran code; install the optional back end: pip install epitran") from e
    try:
        return epitran.Epitran(code)
    except Exception as e:  # epitran raises several types for unknown codes / missing data
        raise RuntimeError(f"epitran has no usable rules for {code!r}: {e}") from e


def _pick_backend(lang: str, backend: str) -> str:
    if backend == "auto":
        return "epitran" if _is_epitran_code(lang) else "espeak"
    return backend


def check_language(lang: str, backend: str = "auto") -> None:
    """Raise a clear error now if ``lang`` has no voice/rules (before converting a file)."""
    _raw_ipa("", lang, backend)


def _raw_ipa(text: str, lang: str, backend: str) -> str:
    backend = _pick_backend(lang, backend)
    if backend == "epitran":
        return _epitran(lang).transliterate(text)
    if backend == "espeak":
        voice = resolve_voice(lang)
        return clean_espeak(espeak.phonemize(text, voice), voice)
    raise ValueError(f"unknown g2p backend {backend!r} (auto, espeak, epitran)")


def g2p_report(text: str, lang: str, remove_diacritics: bool = False, backend: str = "auto") -> tuple[str, Counter]:
    """Like :func:`g2p`, also returning the out-of-inventory symbols dropped on the way."""
    return normalize_ipa_report(_raw_ipa(text, lang, backend), remove_diacritics)


def g2p(text: str, lang: str, remove_diacritics: bool = False, backend: str = "auto") -> str:
    """IPA for ``text`` in language ``lang``, normalised to ZIPA's inventory; words separated
    by single spaces. ``backend``: ``"auto"`` (epitran for ``xxx-Scrp`` codes, espeak-ng
    otherwise), ``"espeak"`` or ``"epitran"``."""
    return g2p_report(text, lang, remove_diacritics, backend)[0]
