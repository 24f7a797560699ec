"""A small ctypes wrapper over the libespeak-ng that the ``espeakng-loader`` wheel bundles.

Three services: the first two used by the demo corpus and by ``zipa.text.g2p``:

* :func:`phonemize` — orthographic text → espeak-ng's IPA (stress marks, length, tone digits
  as espeak writes them; words separated by single spaces, clauses joined by a space). Feed the
  result to :func:`zipa.text.ipa.normalize_ipa` to reach ZIPA's inventory.
* :func:`synthesize` — text → mono float32 samples in [-1, 1] at espeak's native rate
  (22050 Hz), for a voice such as ``"de"`` or a voice plus variant such as ``"de+f3"``.
* :func:`synthesize_with_phones` — the same samples plus the phonemes espeak-ng spoke and the
  sample at which each starts: speech whose phone times are known, for measuring timestamps
  (``zipa.evaluation.timing``).

libespeak-ng keeps global state (the current voice, parameters, the synthesis callback), so
every call goes through one process-wide lock, and the library is initialised once, lazily,
in synchronous mode (``AUDIO_OUTPUT_SYNCHRONOUS``: samples are delivered to a callback before
``espeak_Synth`` returns). Processes (e.g. dataloader workers) each get their own copy.

The library is initialised with phoneme events on (``espeakINITIALIZE_PHONEME_EVENTS |
espeakINITIALIZE_PHONEME_IPA``): the synthesis callback then also receives one
``espeakEVENT_PHONEME`` per phoneme, with its IPA and its sample position. Events change no
sample of the audio (checked: identical samples with and without them, seeded noisy variant).
"""

from __future__ import annotations

import ctypes
import threading
from typing import NamedTuple

import numpy as np

__all__ = [
    "EspeakError",
    "PhonemeEvent",
    "TimedSpeech",
    "phonemize",
    "synthesize",
    "synthesize_with_phones",
    "list_voices",
    "sample_rate",
    "version",
]

# Constants from espeak-ng's speak_lib.h.
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_CHARS_UTF8 = 1
_POS_CHARACTER = 1
_PHONEMES_IPA = 0x02  # espeak_TextToPhonemes phonememode bit 1: IPA as UTF-8
_INITIALIZE_PHONEME_EVENTS = 0x0001  # espeak_Initialize options
_INITIALIZE_PHONEME_IPA = 0x0002  # phoneme events carry IPA (not espeak's mnemonics)
_EVENT_LIST_TERMINATED = 0  # espeak_EVENT_TYPE
_EVENT_PHONEME = 7
_PARAM_RATE = 1  # words per minute, 80..450, default 175
_PARAM_PITCH = 3  # base pitch, 0..100, default 50
_PARAM_RANGE = 4  # pitch range, 0..100, default 50
DEFAULT_RATE = 175
DEFAULT_PITCH = 50
DEFAULT_RANGE = 50


class EspeakError(RuntimeError):
    """An espeak-ng call failed (unknown voice, library not loadable, ...)."""


class _Voice(ctypes.Structure):
    _fields_ = [
        ("name", ctypes.c_char_p),
        ("languages", ctypes.c_void_p),  # (priority byte, language string) pairs; see _languages
        ("identifier", ctypes.c_char_p),
        ("gender", ctypes.c_ubyte),
        ("age", ctypes.c_ubyte),
        ("variant", ctypes.c_ubyte),
        ("xx1", ctypes.c_ubyte),
        ("score", ctypes.c_int),
        ("spare", ctypes.c_void_p),
    ]


class _Event(ctypes.Structure):
    """``espeak_EVENT`` of speak_lib.h (40 bytes on 64-bit platforms)."""

    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),  # character position in the text, from 1
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),  # ms, rounded down
        ("sample", ctypes.c_int),  # sample index in the utterance's audio
        ("user_data", ctypes.c_void_p),
        ("id", ctypes.c_char * 8),  # union {int number; char *name; char string[8]}
    ]


_SynthCallback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event))

_lock = threading.RLock()
_lib: ctypes.CDLL | None = None
_rate: int = 0
_chunks: list[np.ndarray] = []
_events: list[tuple[str, int, int]] | None = None  # (IPA, sample, text position) when collecting
_current_voice: str | None = None


@_SynthCallback
def _on_samples(wav, numsamples, events):
    # Called by espeak_Synth (same thread, lock held) with each chunk of 16-bit samples and the
    # events that fall in it (an array ended by espeakEVENT_LIST_TERMINATED).
    if numsamples > 0 and wav:
        _chunks.append(np.ctypeslib.as_array(wav, shape=(numsamples,)).copy())
    if _events is not None and events:
        i = 0
        while events[i].type != _EVENT_LIST_TERMINATED:
            e = events[i]
            if e.type == _EVENT_PHONEME:
                # id.string: up to 8 bytes of UTF-8, NUL-padded; a longer phoneme name is cut
                # at 8 bytes, possibly inside a character (that partial character is dropped).
                name = bytes(e.id).split(b"\0", 1)[0].decode("utf-8", errors="ignore")
                _events.append((name, int(e.sample), int(e.text_position)))
            i += 1
    return 0  # 0 = continue synthesis


def _load() -> ctypes.CDLL:
    """Load and initialise the library once; return it. Call with the lock held."""
    global _lib, _rate
    if _lib is not None:
        return _lib
    try:
        import espeakng_loader
    except ImportError as e:  # pragma: no cover - a declared dependency
        raise EspeakError("espeak-ng is needed here: pip install espeakng-loader") from e
    try:
        lib = ctypes.CDLL(espeakng_loader.get_library_path())
    except OSError as e:
        raise EspeakError(f"cannot load libespeak-ng: {e}") from e
    lib.espeak_Initialize.restype = ctypes.c_int
    lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
    lib.espeak_SetVoiceByName.restype = ctypes.c_int
    lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
    lib.espeak_SetParameter.restype = ctypes.c_int
    lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
    lib.espeak_SetSynthCallback.restype = None
    lib.espeak_SetSynthCallback.argtypes = [_SynthCallback]
    lib.espeak_Synth.restype = ctypes.c_int
    lib.espeak_Synth.argtypes = [
        ctypes.c_void_p,
        ctypes.c_size_t,
        ctypes.c_uint,
        ctypes.c_int,
        ctypes.c_uint,
        ctypes.c_uint,
        ctypes.c_void_p,
        ctypes.c_void_p,
    ]
    lib.espeak_Synchronize.restype = ctypes.c_int
    lib.espeak_TextToPhonemes.restype = ctypes.c_char_p
    lib.espeak_TextToPhonemes.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_int, ctypes.c_int]
    lib.espeak_ListVoices.restype = ctypes.POINTER(ctypes.POINTER(_Voice))
    lib.espeak_ListVoices.argtypes = [ctypes.c_void_p]
    lib.espeak_Info.restype = ctypes.c_char_p
    lib.espeak_Info.argtypes = [ctypes.c_void_p]
    if hasattr(lib, "espeak_ng_SetRandSeed"):  # espeak-ng >= 1.52
        lib.espeak_ng_SetRandSeed.restype = None
        lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]

    rate = lib.espeak_Initialize(
        _AUDIO_OUTPUT_SYNCHRONOUS,
        0,
        espeakng_loader.get_data_path().encode(),
        _INITIALIZE_PHONEME_EVENTS | _INITIALIZE_PHONEME_IPA,
    )
    if rate <= 0:
        raise EspeakError(f"espeak_Initialize failed (returned {rate})")
    lib.espeak_SetSynthCallback(_on_samples)
    _lib, _rate = lib, rate
    return lib


def _set_voice(lib: ctypes.CDLL, voice: str) -> None:
    """Select ``voice``: a voice name or identifier (``"fr"``, ``"roa/fr"``), or a language
    code that a voice lists (``"fr-fr"``, ``"en-gb"``), optionally with ``"+variant"``."""
    global _current_voice
    if voice == _current_voice:
        return
    if lib.espeak_SetVoiceByName(voice.encode()) != 0:
        base, plus, variant = voice.partition("+")
        identifier = _identifier_for_language(base)
        if identifier is None or lib.espeak_SetVoiceByName((identifier + plus + variant).encode()):
            _current_voice = None
            raise EspeakError(f"unknown espeak-ng voice {voice!r} (see zipa.text.espeak.list_voices())")
    _current_voice = voice


def _identifier_for_language(language: str) -> str | None:
    language = language.lower()
    for v in list_voices():
        if language in v["languages"]:
            return v["identifier"]
    return None


def _set_params(lib: ctypes.CDLL, rate: int, pitch: int, pitch_range: int) -> None:
    lib.espeak_SetParameter(_PARAM_RATE, int(rate), 0)
    lib.espeak_SetParameter(_PARAM_PITCH, int(pitch), 0)
    lib.espeak_SetParameter(_PARAM_RANGE, int(pitch_range), 0)


def sample_rate() -> int:
    """espeak-ng's output sample rate (22050 Hz for the bundled voices)."""
    with _lock:
        _load()
        return _rate


def version() -> str:
    with _lock:
        return _load().espeak_Info(None).decode()


def list_voices() -> list[dict]:
    """The installed voices: ``{"name", "identifier", "languages"}`` each. Pass a language code
    (e.g. ``"cmn"``, ``"en-us"``) or an identifier to :func:`phonemize` / :func:`synthesize`;
    append ``"+<variant>"`` (e.g. ``"+f3"``, ``"+m2"``) to pick a voice variant."""
    with _lock:
        lib = _load()
        voices = lib.espeak_ListVoices(None)
        out = []
        i = 0
        while voices[i]:
            v = voices[i].contents
            out.append(
                {
                    "name": v.name.decode(errors="replace"),
                    "identifier": v.identifier.decode(errors="replace"),
                    "languages": _languages(v.languages),
                }
            )
            i += 1
        return out


def _languages(ptr: int) -> list[str]:
    # A sequence of (priority byte, NUL-terminated language name), ended by a zero byte.
    langs = []
    while ptr:
        priority = ctypes.string_at(ptr, 1)[0]
        if priority == 0:
            break
        name = ctypes.string_at(ptr + 1)
        langs.append(name.decode(errors="replace"))
        ptr += 1 + len(name) + 1
    return langs


def phonemize(text: str, voice: str) -> str:
    """espeak-ng's IPA for ``text`` read with ``voice`` (a language code such as ``"fr"``).

    Words are separated by single spaces; espeak's stress marks, length marks and tone digits
    are kept as espeak writes them (normalise with :func:`zipa.text.ipa.normalize_ipa`)."""
    with _lock:
        lib = _load()
        _set_voice(lib, voice.split("+")[0])
        buf = ctypes.create_string_buffer(text.encode("utf-8"))
        ptr = ctypes.c_void_p(ctypes.addressof(buf))
        clauses = []
        # Each call returns one clause and advances ptr; ptr becomes NULL at the end.
        while ptr.value:
            res = lib.espeak_TextToPhonemes(ctypes.byref(ptr), _CHARS_UTF8, _PHONEMES_IPA)
            if res:
                clause = res.decode("utf-8", errors="replace").strip()
                if clause:
                    clauses.append(clause)
        return " ".join(" ".join(clauses).split())


def _seed(lib: ctypes.CDLL, seed: int) -> None:
    if not hasattr(lib, "espeak_ng_SetRandSeed"):
        raise EspeakError("this libespeak-ng has no espeak_ng_SetRandSeed (needs >= 1.52)")
    lib.espeak_ng_SetRandSeed(int(seed) & 0x7FFFFFFF)


def synthesize(
    text: str,
    voice: str,
    rate: int | None = None,
    pitch: int | None = None,
    pitch_range: int | None = None,
    seed: int | None = None,
) -> tuple[np.ndarray, int]:
    """Speak ``text`` with ``voice`` (e.g. ``"es"``, ``"es+f2"``).

    ``rate`` is in words per minute (espeak's default 175; 80..450), ``pitch`` and
    ``pitch_range`` are 0..100 (default 50). Returns ``(samples, sample_rate)``: a 1-D float32
    array in [-1, 1] and espeak's rate (22050 Hz).

    Reproducibility: voice variants with breath noise (``f2``, ``f3``, ...) draw it from a
    generator that libespeak-ng seeds from the clock; ``seed`` reseeds it for this call.
    Independently, libespeak-ng keeps its pitch-flutter phase in a C static that carries over
    from one utterance to the next and that nothing resets, so the same call can give slightly
    different samples (and lengths, by a few samples) depending on what the process
    synthesised before. Bit-exact audio therefore needs a ``seed`` and the same sequence of
    calls in a fresh process, as ``zipa.data.demo_corpus`` does."""
    samples, sr, _ = _synth(text, voice, rate, pitch, pitch_range, seed, events=False)
    return samples, sr


class PhonemeEvent(NamedTuple):
    """One phoneme that espeak-ng spoke.

    ``phoneme``: espeak-ng's IPA for it, as its phoneme event names it: the stress mark of a
    stressed vowel included (``"ˈaː"``), one event per espeak phoneme (so a diphthong ``"aɪ"``,
    an affricate ``"tʃ"`` or a Mandarin final ``"ˈonɡ"`` is one event), at most 8 bytes of UTF-8
    (longer names are cut), and ``""`` for pauses (and, in tonal voices, for tones). Unlike
    :func:`phonemize`, phoneme events write no length mark that espeak adds in context (Finnish
    ``"a"`` where ``phonemize`` writes ``"aː"``), and espeak's own conventions are not cleaned
    (see :func:`zipa.text.g2p.clean_espeak`). ``start`` and ``end`` are in seconds: ``start`` is
    ``sample / sample_rate``, ``end`` the next event's start (the last one ends with the audio).
    ``text_position``: the position in ``text`` (from 1) of the word it belongs to."""

    phoneme: str
    start: float
    end: float
    sample: int
    text_position: int


class TimedSpeech(NamedTuple):
    """What :func:`synthesize_with_phones` returns."""

    samples: np.ndarray
    sample_rate: int
    phonemes: list[PhonemeEvent]


def synthesize_with_phones(
    text: str,
    voice: str,
    rate: int | None = None,
    pitch: int | None = None,
    pitch_range: int | None = None,
    seed: int | None = None,
) -> TimedSpeech:
    """:func:`synthesize` (same arguments, same samples) plus each phoneme with the time at
    which espeak-ng starts to speak it: ``TimedSpeech(samples, sample_rate, phonemes)``.

    The times are espeak's phoneme events' sample positions (exact to the sample; its
    ``audio_position`` in ms is the same, rounded down). Pauses come as events with an empty
    phoneme, so silence between words or clauses is not counted in the previous phone."""
    samples, sr, events = _synth(text, voice, rate, pitch, pitch_range, seed, events=True)
    n = len(samples)
    phonemes = []
    for k, (name, sample, position) in enumerate(events):
        sample = min(max(sample, 0), n)
        end = min(max(events[k + 1][1], sample), n) if k + 1 < len(events) else n
        phonemes.append(PhonemeEvent(name, sample / sr, end / sr, sample, position))
    return TimedSpeech(samples, sr, phonemes)


def _synth(
    text: str,
    voice: str,
    rate: int | None,
    pitch: int | None,
    pitch_range: int | None,
    seed: int | None,
    events: bool,
) -> tuple[np.ndarray, int, list[tuple[str, int, int]]]:
    global _events
    with _lock:
        lib = _load()
        _set_voice(lib, voice)
        _set_params(
            lib,
            DEFAULT_RATE if rate is None else rate,
            DEFAULT_PITCH if pitch is None else pitch,
            DEFAULT_RANGE if pitch_range is None else pitch_range,
        )
        if seed is not None:
            _seed(lib, seed)
        data = text.encode("utf-8") + b"\0"
        _chunks.clear()
        collected: list[tuple[str, int, int]] = []
        _events = collected if events else None
        try:
            err = lib.espeak_Synth(data, len(data), 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
            if err != 0:
                raise EspeakError(f"espeak_Synth failed with error {err} for voice {voice!r}")
            lib.espeak_Synchronize()
            pcm = np.concatenate(_chunks) if _chunks else np.zeros(0, dtype=np.int16)
        finally:
            _chunks.clear()
            _events = None
        return (pcm.astype(np.float32) / 32768.0), _rate, collected
