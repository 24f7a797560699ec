"""What real recordings do to speech, applied to clean synthetic speech: for training the frame
aligner (`zipa.train.aligner`) on more than a synthesiser's clean output.

Each function takes and returns 1-D float32 samples at 16 kHz and keeps time where it was (a
phone that starts at t s still starts at t s), except :func:`change_speed`, which scales every
time by ``1 / factor`` (the caller moves its labels). :func:`random_augmentation` draws one
chain of them:

* additive noise (white or pink) at an SNR of 0-30 dB;
* reverberation: a synthetic room impulse response (exponentially decaying noise, RT60 0.15-0.7 s)
  whose direct path is at sample 0, so nothing is delayed;
* loudness: a gain of -20 to +6 dB (clipped to [-1, 1]);
* telephone band: 300-3400 Hz band-pass and a round trip through 8 kHz;
* a lossy codec that soundfile writes (Ogg Vorbis, Ogg Opus, MP3 where libsndfile has them),
  written and read back.
"""

from __future__ import annotations

import io
import random
from collections.abc import Callable

import numpy as np

__all__ = [
    "SAMPLE_RATE",
    "add_noise",
    "reverberate",
    "change_gain",
    "telephone",
    "codec",
    "change_speed",
    "available_codecs",
    "random_augmentation",
]

SAMPLE_RATE = 16000


def _power(x: np.ndarray) -> float:
    return float(np.mean(np.square(x, dtype=np.float64))) + 1e-12


def add_noise(x: np.ndarray, snr_db: float, rng: np.random.Generator, colour: str = "white") -> np.ndarray:
    """``x`` plus noise at ``snr_db`` dB below its mean power (``colour``: white or pink)."""
    noise = rng.standard_normal(len(x))
    if colour == "pink":  # 1/f power: shape white noise's spectrum by 1/sqrt(f)
        spectrum = np.fft.rfft(noise)
        f = np.arange(len(spectrum), dtype=np.float64)
        f[0] = 1.0
        noise = np.fft.irfft(spectrum / np.sqrt(f), n=len(x))
    noise *= np.sqrt(_power(x) / _power(noise) / 10 ** (snr_db / 10))
    return (x + noise).astype(np.float32)


def reverberate(x: np.ndarray, rt60: float, rng: np.random.Generator) -> np.ndarray:
    """``x`` convolved with a synthetic room response of reverberation time ``rt60`` s (direct
    path first, at delay 0), rescaled to its original peak."""
    from scipy.signal import fftconvolve

    n = int(rt60 * SAMPLE_RATE)
    t = np.arange(n) / SAMPLE_RATE
    rir = rng.standard_normal(n) * np.exp(-6.9 * t / rt60)  # -60 dB at rt60
    rir[: int(0.002 * SAMPLE_RATE)] = 0.0  # the first reflection 2 ms after the direct path
    rir[0] = 1.0
    rir /= np.sqrt(np.sum(rir**2))
    y = fftconvolve(x, rir)[: len(x)]
    return (y * (np.abs(x).max() / max(np.abs(y).max(), 1e-9))).astype(np.float32)


def change_gain(x: np.ndarray, db: float) -> np.ndarray:
    return np.clip(x * 10 ** (db / 20), -1.0, 1.0).astype(np.float32)


def telephone(x: np.ndarray) -> np.ndarray:
    """Band-limited to 300-3400 Hz (zero-phase: no delay) and passed through 8 kHz."""
    from scipy.signal import butter, resample_poly, sosfiltfilt

    sos = butter(4, [300, 3400], btype="bandpass", fs=SAMPLE_RATE, output="sos")
    y = resample_poly(sosfiltfilt(sos, x), 1, 2)
    return resample_poly(y, 2, 1)[: len(x)].astype(np.float32)


def available_codecs() -> list[tuple[str, str]]:
    """``(format, subtype)`` of the lossy codecs this soundfile writes."""
    import soundfile as sf

    wanted = [("OGG", "VORBIS"), ("OGG", "OPUS"), ("MP3", "MPEG_LAYER_III")]
    formats = sf.available_formats()
    return [(f, s) for f, s in wanted if f in formats and s in sf.available_subtypes(f)]


def codec(x: np.ndarray, fmt: str, subtype: str) -> np.ndarray:
    """``x`` written with a lossy codec and read back (libsndfile trims MP3's encoder delay and
    Ogg's pre-skip: the sound stays where it was, ``tests/test_augment.py``)."""
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, x, SAMPLE_RATE, format=fmt, subtype=subtype)
    buf.seek(0)
    y, _ = sf.read(buf, dtype="float32")
    if y.ndim > 1:
        y = y.mean(axis=1)
    y = y[: len(x)]
    return np.pad(y, (0, len(x) - len(y))).astype(np.float32)


def change_speed(x: np.ndarray, factor: float) -> np.ndarray:
    """``x`` played ``factor`` times faster (pitch moves with it): every time becomes ``t / factor``."""
    from scipy.signal import resample

    return resample(x, max(1, int(round(len(x) / factor)))).astype(np.float32)


def random_augmentation(rng: random.Random) -> tuple[float, Callable[[np.ndarray], np.ndarray], str]:
    """``(speed factor, transform, description)``: one random chain of the above (speed 0.9-1.1,
    then each of reverberation, noise, telephone, codec with probability 1/2, 1/2, 1/4, 1/4,
    then a gain). Apply the transform after :func:`change_speed` with the factor."""
    nrng = np.random.default_rng(rng.randrange(2**32))
    steps: list[tuple[str, Callable[[np.ndarray], np.ndarray]]] = []
    if rng.random() < 0.5:
        rt60 = rng.uniform(0.15, 0.7)
        steps.append((f"reverb {rt60:.2f}s", lambda x: reverberate(x, rt60, nrng)))
    if rng.random() < 0.5:
        snr, colour = rng.choice((0, 5, 10, 20, 30)), rng.choice(("white", "pink"))
        steps.append((f"{colour} noise {snr} dB", lambda x: add_noise(x, snr, nrng, colour)))
    if rng.random() < 0.25:
        steps.append(("telephone", telephone))
    codecs = available_codecs()
    if codecs and rng.random() < 0.25:
        fmt, subtype = rng.choice(codecs)
        steps.append((subtype.lower(), lambda x: codec(x, fmt, subtype)))
    db = rng.uniform(-20, 6)
    steps.append((f"gain {db:+.0f} dB", lambda x: change_gain(x, db)))
    speed = rng.uniform(0.9, 1.1)

    def transform(x: np.ndarray) -> np.ndarray:
        for _, step in steps:
            x = step(x)
        return x

    return speed, transform, f"speed {speed:.2f}, " + ", ".join(name for name, _ in steps)
