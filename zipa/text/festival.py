"""Speech from Festival, a second synthesiser, with its phones timed and spelled in IPA.

espeak-ng's voices are formant synthesis: every figure measured only on them may describe
espeak-ng rather than speech. Festival's Debian voices are made from recordings of real
speakers (concatenated diphones, one cluster-unit voice, one HTS voice), and Festival knows where
it put each phone: every item of an utterance's ``Segment`` relation has an ``end`` time in
seconds; a segment starts where the previous one ends. :func:`synthesize` speaks sentences with a
voice and returns 16 kHz float32 samples plus each segment with its start, end and IPA.

Phone sets. Each voice uses a phone set of its language (English voices Festival's ``radio``
set, the others their own); :data:`PHONE_SETS` spells every phone of each in IPA, written from
Festival's definitions of them (``PhoneSet.description``: vowel or consonant ``vc``, vowel height
``vheight``, frontness ``vfront``, rounding ``vrnd``, length ``vlng``, consonant type ``ctype``,
place ``cplace``, voicing ``cvox``) in the spelling espeak-ng uses for the same sound, and
checked against espeak-ng's IPA of the same words (``tests/test_festival.py``). Pauses and
breaths (``pau``, ``#``, ``h#``, ``brth``, ...) map to ``""``: silence.

Voices. :data:`VOICES` lists those Debian packages, each marked ``allowed`` or not: the allowed
ones may be trained on and tuned with; the others (Festival's second voice of a language, the
HTS voice) are kept for an independent check and must never be trained or tuned on.

Text encodings: the Italian, Finnish and Czech voices read their text as ISO-8859 bytes (Latin-1,
Latin-2) and spell out UTF-8 letters they do not know; the scripts written here are encoded per
voice (:attr:`FestivalVoice.encoding`), and a sentence the encoding cannot hold is an error
naming it.

Festival runs as a command (``festival -b script.scm``), one process per call of
:func:`synthesize` however many sentences it is given (it starts in about 0.2 s).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import NamedTuple

import numpy as np

from zipa.text.ipa import normalize_ipa, phone_class

__all__ = [
    "FestivalError",
    "FestivalVoice",
    "FestivalPhone",
    "FestivalSpeech",
    "VOICES",
    "PHONE_SETS",
    "SAMPLE_RATE",
    "allowed_voices",
    "installed_voices",
    "is_available",
    "phone_ipa",
    "synthesize",
    "voice",
]

SAMPLE_RATE = 16000  # every voice's audio is resampled to this
DEBIAN_PACKAGES = (
    "festival festvox-kdlpc16k festvox-italp16k festvox-suopuhe-lj festvox-czech-ph festvox-ru festvox-hi-nsk"
)


class FestivalError(RuntimeError):
    """Festival or a voice is missing, or a synthesis failed."""


@dataclass(frozen=True)
class FestivalVoice:
    name: str  # Festival's voice name: (voice_<name>)
    language: str  # the espeak-ng voice of the same language (its G2P, its phone spellings)
    phone_set: str  # key of PHONE_SETS
    package: str  # the Debian package that installs it
    allowed: bool  # may be trained on and tuned with; False: held out for independent checks
    encoding: str = "utf-8"  # how the voice reads its text


VOICES: dict[str, FestivalVoice] = {
    v.name: v
    for v in (
        FestivalVoice("ked_diphone", "en-us", "radio", "festvox-kdlpc16k", True),
        FestivalVoice("lp_diphone", "it", "italian", "festvox-italp16k", True, "latin-1"),
        FestivalVoice("suo_fi_lj_diphone", "fi", "finnish", "festvox-suopuhe-lj", True, "latin-1"),
        FestivalVoice("czech_ph", "cs", "czech", "festvox-czech-ph", True, "iso-8859-2"),
        FestivalVoice("msu_ru_nsh_clunits", "ru", "msu_ru", "festvox-ru", True),
        FestivalVoice("hindi_NSK_diphone", "hi", "hindi", "festvox-hi-nsk", True),
        # Held out: never train, tune or choose settings on these.
        FestivalVoice("kal_diphone", "en-us", "radio", "festvox-kallpc16k", False),
        FestivalVoice("cmu_us_slt_arctic_hts", "en-us", "radio", "festvox-us-slt-hts", False),
        FestivalVoice("pc_diphone", "it", "italian", "festvox-itapc16k", False, "latin-1"),
        FestivalVoice("hy_fi_mv_diphone", "fi", "finnish", "festvox-suopuhe-mv", False, "latin-1"),
    )
}

# Festival phone -> IPA, per phone set. Comments give Festival's features where the choice is
# not plain from the name (vc vlng vheight vfront vrnd ctype cplace cvox).
PHONE_SETS: dict[str, dict[str, str]] = {
    # US English (radio set; ked, kal, slt). Long vowels as espeak-ng en-us writes them.
    "radio": {
        "aa": "ɑː",
        "ae": "æ",
        "ah": "ʌ",
        "ao": "ɔː",
        "aw": "aʊ",
        "ax": "ə",
        "axr": "ɚ",
        "ay": "aɪ",
        "eh": "ɛ",
        "er": "ɚ",
        "ey": "eɪ",
        "ih": "ɪ",
        "iy": "iː",
        "ow": "oʊ",
        "oy": "ɔɪ",
        "uh": "ʊ",
        "uw": "uː",
        "el": "əl",
        "em": "əm",
        "en": "ən",  # syllabic: vc +, ctype l / n
        "b": "b",
        "ch": "tʃ",
        "d": "d",
        "dh": "ð",
        "dx": "ɾ",
        "f": "f",
        "g": "ɡ",
        "hh": "h",
        "hv": "h",
        "jh": "dʒ",
        "k": "k",
        "l": "l",
        "m": "m",
        "n": "n",
        "nx": "n",  # nasal flap (ctype n, cplace d): espeak-ng writes n
        "ng": "ŋ",
        "p": "p",
        "r": "ɹ",
        "s": "s",
        "sh": "ʃ",
        "t": "t",
        "th": "θ",
        "v": "v",
        "w": "w",
        "y": "j",
        "z": "z",
        "zh": "ʒ",
        "pau": "",
        "h#": "",
        "brth": "",
    },
    # Italian (lp, pc). Digit 1: the stressed vowel (acc +); E O: open mid vowels.
    "italian": {
        "i": "i",
        "e": "e",
        "E": "ɛ",
        "a": "a",
        "o": "o",
        "O": "ɔ",
        "u": "u",
        "i1": "i",
        "e1": "e",
        "E1": "ɛ",
        "a1": "a",
        "o1": "o",
        "O1": "ɔ",
        "u1": "u",
        "j": "j",
        "w": "w",
        "p": "p",
        "t": "t",
        "k": "k",
        "b": "b",
        "d": "d",
        "g": "ɡ",
        "f": "f",
        "s": "s",
        "S": "ʃ",
        "v": "v",
        "z": "z",
        "Z": "ʒ",
        "ts": "ts",
        "tS": "tʃ",
        "dz": "dz",
        "dZ": "dʒ",
        "m": "m",
        "n": "n",
        "J": "ɲ",
        "ng": "ŋ",
        "nf": "ɱ",  # n before f/v (ctype n, cplace b: labiodental)
        "l": "l",
        "L": "ʎ",
        "r": "r",
        "#": "",
    },
    # Finnish (suo_fi_lj, hy_fi_mv). ':' is length (vlng l / clng l); @ = ä, 7 = ö (vfront 1,
    # vrnd +), & a mid central vowel of loans.
    "finnish": {
        **{
            p: ipa + long
            for v, ipa in (
                ("a", "a"),
                ("e", "e"),
                ("i", "i"),
                ("o", "o"),
                ("u", "u"),
                ("y", "y"),
                ("@", "æ"),
                ("7", "ø"),
            )
            for p, long in ((v, ""), (v + ":", "ː"))
        },
        "&": "ə",
        **{
            p: ipa + long
            for c, ipa in (
                ("p", "p"),
                ("t", "t"),
                ("k", "k"),
                ("b", "b"),
                ("d", "d"),
                ("g", "ɡ"),
                ("f", "f"),
                ("T", "θ"),
                ("s", "s"),
                ("S", "ʃ"),
                ("h", "h"),
                ("v", "v"),
                ("m", "m"),
                ("n", "n"),
                ("N", "ŋ"),
                ("l", "l"),
                ("L", "l"),
                ("r", "r"),
                ("j", "j"),
                ("w", "w"),
            )
            for p, long in ((c, ""), (c + ":", "ː"))
        },
        "D:": "ðː",
        "z:": "zː",
        "Z:": "ʒː",
        "#": "",
        "##": "",
    },
    # Czech (czech_ph). ~ palatal/postalveolar, r~ the fricative trill ř (r~* its voiceless
    # partner; written r and r̥ as espeak-ng's normalised ř, the inventory has no raising mark),
    # n* the velar nasal before k/g; _ a short break between words.
    "czech": {
        **{p: v + long for v in "aeiou" for p, long in ((v, ""), (v + ":", "ː"))},
        "b": "b",
        "c": "ts",
        "c~": "tʃ",
        "ch": "x",
        "d": "d",
        "d~": "ɟ",
        "dz": "dz",
        "dz~": "dʒ",
        "f": "f",
        "g": "ɡ",
        "h": "ɦ",
        "j": "j",
        "k": "k",
        "l": "l",
        "m": "m",
        "n": "n",
        "n*": "ŋ",
        "n~": "ɲ",
        "p": "p",
        "r": "r",
        "r~": "r",
        "r~*": "r̥",
        "s": "s",
        "s~": "ʃ",
        "t": "t",
        "t~": "c",
        "v": "v",
        "z": "z",
        "z~": "ʒ",
        "#": "",
        "_": "",
    },
    # Russian (msu_ru_nsh). Doubled letters: stressed vowels (ii ... aa) or soft consonants
    # (csoft +: pp = pʲ); a/ae/ay/e/i/ur/u unstressed (reduced) vowels; sh zh the hard
    # postalveolars (espeak-ng: ʃ ʒ), sch the long soft ɕː.
    "msu_ru": {
        "ii": "i",
        "yy": "ɨ",
        "uu": "u",
        "ee": "e",
        "oo": "o",
        "aa": "a",
        "a": "ʌ",
        "e": "ɪ",
        "i": "ɪ",
        "y": "ɨ",
        "u": "ʊ",
        "ae": "ɪ",
        "ay": "ʌ",
        "ur": "ʊ",
        **{
            p: ipa + soft
            for c, ipa in (
                ("p", "p"),
                ("b", "b"),
                ("t", "t"),
                ("d", "d"),
                ("k", "k"),
                ("g", "ɡ"),
                ("f", "f"),
                ("v", "v"),
                ("s", "s"),
                ("z", "z"),
                ("h", "x"),
                ("m", "m"),
                ("n", "n"),
                ("l", "l"),
                ("r", "r"),
            )
            for p, soft in ((c, ""), (c + c, "ʲ"))
        },
        "c": "ts",
        "ch": "tɕ",
        "sh": "ʃ",
        "sch": "ɕː",
        "zh": "ʒ",
        "j": "j",
        "pau": "",
    },
    # Hindi (hindi_NSK). Short a is the schwa; th/dh/tth/ddh the dental stops (written as
    # dental fricatives in Festival's set; t d as espeak-ng writes them), T/D/td retroflex;
    # h-suffix: aspirated; ch j the palatal stops espeak-ng writes (c ɟ).
    "hindi": {
        "a": "ə",
        "aa": "aː",
        "ih": "ɪ",
        "iy": "iː",
        "uh": "ʊ",
        "uw": "uː",
        "eh": "eː",
        "ee": "eː",
        "ay": "ɛː",
        "oh": "oː",
        "oo": "oː",
        "aw": "ɔː",
        "@": "ɔ",
        "w": "ʊ",  # vc + (a vowel in Festival's set): the second part of a diphthong
        "f": "f",
        "k": "k",
        "g": "ɡ",
        "ch": "c",
        "T": "ʈ",
        "D": "ɖ",
        "N": "ɳ",
        "th": "t",
        "dh": "d",
        "n": "n",
        "p": "p",
        "b": "b",
        "m": "m",
        "y": "j",
        "r": "ɾ",
        "l": "l",
        "v": "ʋ",
        "L": "ɭ",
        "R": "ɽ",
        "s": "s",
        "sh": "ʃ",
        "j": "ɟ",
        "h": "h",
        "ksh": "kʃ",
        "sri": "ʃɾ",
        "x": "x",
        "kh": "kʰ",
        "gh": "ɡʰ",
        "td": "ʈʰ",
        "tth": "tʰ",
        "ddh": "dʰ",
        "bh": "bʰ",
        "zh": "z",
        "pau": "",
    },
}


# Pairs of segments that spell one sound (within a word): the radio lexicon writes an r-coloured
# vowel as "er" + "r"; it becomes one phone, spelled as espeak-ng en-us spells it.
JOINED: dict[tuple, str] = {("er", "r"): "ɚ"}


class FestivalPhone(NamedTuple):
    """One segment of Festival's ``Segment`` relation: its name in the voice's phone set, its IPA
    (``""`` for pauses), its start and end in seconds (the start is the previous end), and the
    number of the word it belongs to in the sentence (from 0; None for pauses). Two segments
    that spell one sound (:data:`JOINED`) come as one, named after the first."""

    name: str
    ipa: str
    start: float
    end: float
    word: int | None


class FestivalSpeech(NamedTuple):
    """What :func:`synthesize` returns per sentence."""

    text: str
    voice: str
    samples: np.ndarray  # float32 in [-1, 1] at SAMPLE_RATE
    sample_rate: int
    phones: list[FestivalPhone]


def joined_segments(speech: FestivalSpeech) -> list[list]:
    """The segments of ``speech`` as ``[ipa (normalised), start, end, word]``, a geminate (the
    same consonant twice in a word) joined into one long consonant (``tː``); pauses have an
    empty ``ipa``."""
    segments: list[list] = []
    for phone in speech.phones:
        ipa = normalize_ipa(phone.ipa)
        last = segments[-1] if segments else None
        if ipa and last and last[0] == ipa and last[3] == phone.word and phone_class(ipa) != "vowels":
            last[0], last[2] = ipa + "ː", phone.end
        elif ipa and last and last[0] == ipa + "ː" and last[3] == phone.word:
            last[2] = phone.end
        else:
            segments.append([ipa, phone.start, phone.end, phone.word])
    return segments


def transcript(speech: FestivalSpeech) -> str:
    """The IPA of ``speech`` (its `joined_segments`), words separated by spaces."""
    words: dict[int, str] = {}
    for ipa, _, _, word in joined_segments(speech):
        if ipa:
            words[word] = words.get(word, "") + ipa
    return " ".join(text for _, text in sorted(words.items()))


def voice(name: str) -> FestivalVoice:
    if name not in VOICES:
        raise FestivalError(f"unknown Festival voice {name!r}; known: {', '.join(VOICES)}")
    return VOICES[name]


def allowed_voices() -> list[str]:
    """The voices that may be trained on and tuned with."""
    return [v.name for v in VOICES.values() if v.allowed]


def phone_ipa(voice_name: str, phone: str) -> str:
    """The IPA of ``phone`` in the phone set of ``voice_name`` (``""``: silence)."""
    table = PHONE_SETS[voice(voice_name).phone_set]
    if phone not in table:
        raise FestivalError(
            f"phone {phone!r} of voice {voice_name} is not in the {voice(voice_name).phone_set!r} table"
        )
    return table[phone]


def is_available() -> bool:
    return shutil.which("festival") is not None


def _festival() -> str:
    exe = shutil.which("festival")
    if exe is None:
        raise FestivalError(f"Festival is not installed (no 'festival' on PATH): apt-get install {DEBIAN_PACKAGES}")
    return exe


def _run(script: bytes, timeout: float) -> str:
    with tempfile.NamedTemporaryFile("wb", suffix=".scm", delete=False) as f:
        f.write(script)
    try:
        proc = subprocess.run([_festival(), "-b", f.name], capture_output=True, timeout=timeout)
    finally:
        os.unlink(f.name)
    # Festival prints its own errors on stdout or stderr and may still exit 0.
    out = proc.stdout.decode("latin-1") + proc.stderr.decode("latin-1")
    if proc.returncode != 0 or "SIOD ERROR" in out:
        raise FestivalError(f"festival failed (exit {proc.returncode}): {out.strip()[-800:]}")
    return out


@lru_cache(maxsize=1)
def installed_voices() -> tuple:
    """The voices of :data:`VOICES` that this Festival has (empty without Festival)."""
    if not is_available():
        return ()
    out = _run(b'(format t "VOICES %l\\n" (voice.list))\n', timeout=60)
    line = next((row for row in out.splitlines() if row.startswith("VOICES ")), "VOICES ()")
    names = set(line[len("VOICES (") :].rstrip(")").split())
    return tuple(name for name in VOICES if name in names)


def _check_installed(name: str) -> FestivalVoice:
    v = voice(name)
    _festival()
    if name not in installed_voices():
        raise FestivalError(f"the Festival voice {name} is not installed: apt-get install {v.package}")
    return v


def _scheme_string(text: str, encoding: str, voice_name: str) -> bytes:
    try:
        data = text.encode(encoding)
    except UnicodeEncodeError as e:
        raise FestivalError(
            f"{voice_name} reads {encoding} text, which cannot hold {text[e.start : e.end]!r} in {text!r}"
        ) from None
    return b'"' + data.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'


def phone_set_description(voice_name: str) -> dict[str, dict[str, str]]:
    """Festival's own definition of the voice's phone set: ``{phone: {feature: value}}``."""
    _check_installed(voice_name)
    script = (
        f"(voice_{voice_name})\n"
        "(format t \"FEATURES %l\\n\" (mapcar car (cadr (assoc 'features (PhoneSet.description '(features))))))\n"
        "(mapcar (lambda (p) (format t \"PHONE %l\\n\" p)) (cadr (assoc 'phones (PhoneSet.description '(phones)))))\n"
    )
    out = _run(script.encode(), timeout=60)
    features: list[str] = []
    phones: dict[str, dict[str, str]] = {}
    for line in out.splitlines():
        if line.startswith("FEATURES "):
            features = line[len("FEATURES (") :].rstrip(")").split()
        elif line.startswith("PHONE "):
            name, *values = line[len("PHONE (") :].rstrip(")").split()
            phones[name] = dict(zip(features, values))
    return phones


def synthesize(
    texts: Sequence[str], voice_name: str, duration_stretch: Sequence[float] | None = None, timeout: float = 600
) -> list[FestivalSpeech]:
    """Speak each of ``texts`` with the Festival voice ``voice_name`` (one Festival process for
    all). ``duration_stretch``: per sentence, Festival's ``Duration_Stretch`` (1 = the voice's
    own speed, 1.2 = 20 % slower). Returns one :class:`FestivalSpeech` per sentence."""
    v = _check_installed(voice_name)
    stretch = [1.0] * len(texts) if duration_stretch is None else list(duration_stretch)
    if len(stretch) != len(texts):
        raise ValueError("duration_stretch needs one value per text")
    if not texts:
        return []
    with tempfile.TemporaryDirectory(prefix="zipa-festival-") as tmp:
        parts = [f"(voice_{voice_name})\n".encode()]
        for i, (text, s) in enumerate(zip(texts, stretch)):
            if not text.strip():
                raise FestivalError(f"empty sentence (item {i}) for {voice_name}")
            wav = Path(tmp) / f"{i}.wav"
            parts += [
                f"(Parameter.set 'Duration_Stretch {float(s)!r})\n".encode(),
                b"(set! utt (utt.synth (Utterance Text ",
                _scheme_string(text, v.encoding, voice_name),
                b")))\n",
                f'(utt.save.wave utt "{wav}" \'riff)\n(format t "UTT {i}\\n")\n'.encode(),
                b'(mapcar (lambda (s) (format t "SEG %s %f %s\\n" (item.name s) (item.feat s "end") '
                b'(item.feat s "R:SylStructure.parent.parent.id"))) '
                b"(utt.relation.items utt 'Segment))\n",
            ]
        out = _run(b"".join(parts), timeout=timeout)
        segments: dict[int, list[tuple]] = {}
        current = None
        for line in out.splitlines():
            if line.startswith("UTT "):
                current = segments.setdefault(int(line.split()[1]), [])
            elif line.startswith("SEG ") and current is not None:
                _, name, end, word = line.split()
                current.append((name, float(end), word))
        results = []
        for i, text in enumerate(texts):
            samples = _read_wav(Path(tmp) / f"{i}.wav")
            phones: list[FestivalPhone] = []
            start, words = 0.0, dict[str, int]()
            number: int | None = None
            for name, end, word in segments.get(i, []):
                ipa = phone_ipa(voice_name, name)
                # Pauses belong to no word; a segment a post-lexical rule added (English linking r)
                # has no word either (its word feature is 0): it joins the word before it.
                if not ipa:
                    number = None
                elif word != "0":
                    number = words.setdefault(word, len(words))
                if phones and (phones[-1].name, name) in JOINED and phones[-1].word == number:
                    phones[-1] = phones[-1]._replace(ipa=JOINED[phones[-1].name, name], end=end)
                else:
                    phones.append(FestivalPhone(name, ipa, start, end, number))
                start = end
            results.append(FestivalSpeech(text, voice_name, samples, SAMPLE_RATE, phones))
        return results


def _read_wav(path: Path) -> np.ndarray:
    """A Festival RIFF file as float32 samples at :data:`SAMPLE_RATE`."""
    import soundfile as sf

    if not path.is_file():
        raise FestivalError(f"festival wrote no audio ({path.name})")
    samples, rate = sf.read(str(path), dtype="float32", always_2d=True)
    samples = samples.mean(axis=1)
    if rate != SAMPLE_RATE:
        from math import gcd

        from scipy.signal import resample_poly

        g = gcd(int(rate), SAMPLE_RATE)
        samples = resample_poly(samples, SAMPLE_RATE // g, int(rate) // g).astype(np.float32)
    return np.ascontiguousarray(samples, dtype=np.float32)
