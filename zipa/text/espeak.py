"""A small ctypes wrapper over the libespeak-ng that the ``espeakng-loader`` wheel bundles.

Two services, both used by the demo corpus and by ``zipa.text.g2p``:

* :func:`phonemize` — orthographic text → espeak-ng's IPA (stress marks, length, tone digits
  as espeak writes them; words separated by single spaces, clauses joined by a space). Feed the
  result to :func:`zipa.text.ipa.normalize_ipa` to reach ZIPA's inventory.
* :func:`synthesize` — text → mono float32 samples in [-1, 1] at espeak's native rate
  (22050 Hz), for a voice such as ``"de"`` or a voice plus variant such as ``"de+f3"``.

libespeak-ng keeps global state (the current voice, parameters, the synthesis callback), so
every call goes through one process-wide lock, and the library is initialised once, lazily,
in synchronous mode (``AUDIO_OUTPUT_SYNCHRONOUS``: samples are delivered to a callback before
``espeak_Synth`` returns). Processes (e.g. dataloader workers) each get their own copy.
"""

from __future__ import annotations

import ctypes
import threading
from typing import Optional

import numpy as np

__all__ = ["EspeakError", "phonemize", "synthesize", "list_voices", "sample_rate", "version"]

# Constants from espeak-ng's speak_lib.h.
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_CHARS_UTF8 = 1
_POS_CHARACTER = 1
_PHONEMES_IPA = 0x02  # espeak_TextToPhonemes phonememode bit 1: IPA as UTF-8
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


_SynthCallback = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p
)

_lock = threading.RLock()
_lib: Optional[ctypes.CDLL] = None
_rate: int = 0
_chunks: list[np.ndarray] = []
_current_voice: Optional[str] = None


@_SynthCallback
def _on_samples(wav, numsamples, _events):
    # Called by espeak_Synth (same thread, lock held) with each chunk of 16-bit samples.
    if numsamples > 0 and wav:
        _chunks.append(np.ctypeslib.as_array(wav, shape=(numsamples,)).copy())
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
        ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
        ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p,
    ]
    lib.espeak_Synchronize.restype = ctypes.c_int
    lib.espeak_TextToPhonemes.restype = ctypes.c_char_p
    lib.espeak_TextToPhonemes.argtypes = [
        ctypes.POINTER(ctypes.c_void_p), ctypes.c_int, ctypes.c_int
    ]
    lib.espeak_ListVoices.restype = ctypes.POINTER(ctypes.POINTER(_Voice))
    lib.espeak_ListVoices.argtypes = [ctypes.c_void_p]
    lib.espeak_Info.restype = ctypes.c_char_p
    lib.espeak_Info.argtypes = [ctypes.c_void_p]
    if hasattr(lib, "espeak_ng_SetRandSeed"):  # espeak-ng >= 1.52
        lib.espeak_ng_SetRandSeed.restype = None
        lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]

    rate = lib.espeak_Initialize(
        _AUDIO_OUTPUT_SYNCHRONOUS, 0, espeakng_loader.get_data_path().encode(), 0
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
            raise EspeakError(
                f"unknown espeak-ng voice {voice!r} (see zipa.text.espeak.list_voices())"
            )
    _current_voice = voice


def _identifier_for_language(language: str) -> Optional[str]:
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
    rate: Optional[int] = None,
    pitch: Optional[int] = None,
    pitch_range: Optional[int] = None,
    seed: Optional[int] = None,
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
        try:
            err = lib.espeak_Synth(data, len(data), 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
            if err != 0:
                raise EspeakError(f"espeak_Synth failed with error {err} for voice {voice!r}")
            lib.espeak_Synchronize()
            pcm = np.concatenate(_chunks) if _chunks else np.zeros(0, dtype=np.int16)
        finally:
            _chunks.clear()
        return (pcm.astype(np.float32) / 32768.0), _rate
