"""Audio input: any file or array -> 16 kHz mono float32 samples, with errors that name the item.

Rules:
- Paths are read with soundfile (wav, flac, ogg, and mp3 where libsndfile >= 1.1 supports it).
- Arrays and tensors are taken to be at ``sampling_rate`` unless ``source_rate`` says otherwise.
  Signed integer PCM is scaled to [-1, 1).
- 2-D input is mixed to mono by averaging channels. The channel axis is the shorter one, so both
  (channels, samples) (torchaudio) and (samples, channels) (soundfile) layouts work; more than
  ``MAX_CHANNELS`` channels is refused, since that is almost always a padded batch passed as one
  item (pass a list instead).
- Resampling uses ``scipy.signal.resample_poly`` (polyphase, Kaiser-windowed FIR): the same
  resampler lhotse falls back to without torchaudio, so files resampled here and cuts resampled
  by the data pipeline agree.
- Silence is valid; empty audio and NaN/inf samples are not.
"""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Union

import numpy as np

if TYPE_CHECKING:
    import torch

SAMPLING_RATE = 16000
MAX_CHANNELS = 8

AudioItem = Union[str, Path, np.ndarray, "torch.Tensor"]


def load_audio(
    item: AudioItem,
    sampling_rate: int = SAMPLING_RATE,
    source_rate: int | None = None,
    name: str | None = None,
) -> np.ndarray:
    """Return ``item`` as 1-D float32 samples at ``sampling_rate``.

    ``source_rate`` is the rate of an array/tensor item (ignored for files, whose header says).
    ``name`` labels the item in error messages (default: the path, or "audio array").
    """
    if isinstance(item, (str, Path)):
        label = name or str(item)
        samples, rate = _read_file(Path(item), label)
    else:
        label = name or "audio array"
        samples, rate = _to_numpy(item, label), (source_rate or sampling_rate)

    if samples.size == 0:
        raise ValueError(f"{label}: empty audio (0 samples)")
    samples = _to_mono(samples, label, file_layout=isinstance(item, (str, Path)))
    if not np.isfinite(samples).all():
        raise ValueError(f"{label}: audio contains NaN or infinite samples")
    if rate != sampling_rate:
        samples = resample(samples, rate, sampling_rate)
    return np.ascontiguousarray(samples, dtype=np.float32)


def load_batch(
    items: Sequence[AudioItem],
    sampling_rate: int = SAMPLING_RATE,
    source_rate: int | None = None,
) -> list[np.ndarray]:
    """``load_audio`` over a list; an error names the index of the bad item ("item 3 (a.wav)")."""
    out = []
    for i, item in enumerate(items):
        label = f"item {i} ({item})" if isinstance(item, (str, Path)) else f"item {i}"
        out.append(load_audio(item, sampling_rate, source_rate=source_rate, name=label))
    return out


def resample(samples: np.ndarray, source_rate: int, target_rate: int) -> np.ndarray:
    """Polyphase resampling of 1-D samples; output length is ceil(n * target / source)."""
    from scipy.signal import resample_poly

    ratio = Fraction(int(target_rate), int(source_rate))
    out = resample_poly(samples.astype(np.float32), ratio.numerator, ratio.denominator)
    return out.astype(np.float32, copy=False)


def _read_file(path: Path, label: str) -> tuple[np.ndarray, int]:
    import soundfile as sf

    if not path.is_file():
        raise FileNotFoundError(f"{label}: no such audio file")
    if path.suffix.lower() == ".mp3" and "MP3" not in sf.available_formats():
        raise ValueError(
            f"{label}: this libsndfile ({sf.__libsndfile_version__}) cannot read mp3; "
            "convert the file to wav or flac, or install libsndfile >= 1.1"
        )
    try:
        samples, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as e:  # soundfile raises LibsndfileError/RuntimeError/TypeError
        raise ValueError(f"{label}: cannot read audio file: {e}") from e
    return samples, int(rate)


def _to_numpy(item, label: str) -> np.ndarray:
    if hasattr(item, "detach"):  # torch.Tensor, without importing torch here
        item = item.detach().cpu().numpy()
    if not isinstance(item, np.ndarray):
        raise ValueError(f"{label}: expected a path, numpy array or torch tensor, got {type(item).__name__}")
    if np.issubdtype(item.dtype, np.signedinteger):
        return item.astype(np.float32) / float(2 ** (8 * item.dtype.itemsize - 1))
    if not np.issubdtype(item.dtype, np.floating):
        raise ValueError(f"{label}: unsupported sample type {item.dtype}")
    return item.astype(np.float32, copy=False)


def _to_mono(samples: np.ndarray, label: str, file_layout: bool) -> np.ndarray:
    if samples.ndim == 1:
        return samples
    if samples.ndim != 2:
        raise ValueError(f"{label}: expected 1-D samples or 2-D (channels, samples), got shape {tuple(samples.shape)}")
    # soundfile always gives (samples, channels); for arrays the shorter axis is the channels.
    channel_axis = 1 if file_layout else int(np.argmin(samples.shape))
    if samples.shape[channel_axis] > MAX_CHANNELS and not file_layout:
        raise ValueError(
            f"{label}: shape {tuple(samples.shape)} has more than {MAX_CHANNELS} channels; "
            "is it a padded batch? Pass a list of 1-D arrays instead"
        )
    if samples.shape[channel_axis] == 1:
        return samples.reshape(-1)
    return samples.mean(axis=channel_axis, dtype=np.float32)
