"""The alignment picture: spectrogram on top, phone and word tiers under it, one time axis.

Layout (a `matplotlib.figure.Figure`, no pyplot state):

- ``fig.axes[0]``: the spectrogram. ``"linear"`` (default) is a Praat-like broadband
  spectrogram: pre-emphasised audio, 10 ms Hann windows, 0 .. ``max_frequency`` Hz, grey levels
  over the top ``dynamic_range`` dB. ``"mel"`` shows the 80-bin log-mel filterbank the model
  reads (`zipa.audio.features`). Word boundaries are drawn over it as dotted lines.
- ``fig.axes[1]``: the ``phones`` tier, ``fig.axes[2]``: the ``words`` tier (when drawn).
  Each tier is drawn as Praat draws an IntervalTier: labels centred in their intervals (the
  tier's only texts, in time order), boundaries as vertical lines (one `Line2D` per tier,
  labelled ``"boundaries"``, whose x-data are the interval starts and ends inside the view,
  segments separated by NaN). Phones are shaded by confidence (a `PatchCollection` whose array
  holds the confidences; light red = low, light green = high).

Times follow `zipa.decoding.timestamps`; intervals are clipped to the view and gaps between
them are left empty, as in the TextGrid writer.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from zipa.audio.load import SAMPLING_RATE, AudioItem, load_audio
from zipa.decoding.timestamps import Alignment, Interval
from zipa.inference.writers import fill_tier
from zipa.utils.atomic import open_atomic

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

SPECTROGRAMS = ("linear", "mel")
WINDOW = 0.010  # seconds: a broadband window, as Praat's default 5 ms Gaussian (10 ms long)
MIN_HOP = 0.002  # seconds between spectrogram columns ...
MAX_COLUMNS = 4000  # ... unless that gives more columns than a picture can show
MEL_FRAME_SHIFT = 0.010  # lhotse fbank frames (frame m is centred at (m + 0.5) * 10 ms)
PRE_EMPHASIS = 0.97
INSTALL_HINT = "zipa.plot needs matplotlib: pip install 'zipa-phones[plot]' (or pip install matplotlib)"


def _figure_class():
    try:
        from matplotlib.figure import Figure
    except ImportError as e:
        raise ImportError(INSTALL_HINT) from e
    return Figure


# ---------------------------------------------------------------------------------------------
# Audio
# ---------------------------------------------------------------------------------------------


def _samples(audio: AudioItem, sampling_rate: int | None) -> np.ndarray:
    """16 kHz mono float32 (a path, or an array at ``sampling_rate``, default 16 kHz)."""
    return load_audio(audio, SAMPLING_RATE, source_rate=sampling_rate)


def segment(
    audio: AudioItem,
    interval: Interval | tuple[float, float],
    sampling_rate: int | None = None,
    padding: float = 0.0,
) -> np.ndarray:
    """The samples of ``interval`` (an `Interval` or ``(start, end)`` in seconds), widened by
    ``padding`` seconds on each side and clipped to the audio: 16 kHz mono float32, e.g. for
    ``IPython.display.Audio(zipa.plot.segment(path, phone), rate=16000)``.

    ``audio`` is a file path or an array at ``sampling_rate`` (default 16 kHz)."""
    start, end = (interval.start, interval.end) if isinstance(interval, Interval) else interval
    if end < start:
        raise ValueError(f"segment: end {end} is before start {start}")
    samples = _samples(audio, sampling_rate)
    first = max(0, int(round((start - padding) * SAMPLING_RATE)))
    last = min(len(samples), int(round((end + padding) * SAMPLING_RATE)))
    return samples[first : max(first, last)].copy()


def linear_spectrogram(
    samples: np.ndarray, max_frequency: float = 5000.0, dynamic_range: float = 50.0
) -> tuple[np.ndarray, float, np.ndarray]:
    """(power in dB clipped to ``dynamic_range`` below the peak, shape (bins, columns); seconds
    between columns, column c being centred at ``c * hop``; the bins' frequencies in Hz)."""
    duration = len(samples) / SAMPLING_RATE
    hop_s = max(MIN_HOP, duration / MAX_COLUMNS)
    hop = max(1, int(round(hop_s * SAMPLING_RATE)))
    win = int(round(WINDOW * SAMPLING_RATE))
    n_fft = 512
    x = np.append(samples[:1], samples[1:] - PRE_EMPHASIS * samples[:-1]).astype(np.float32)
    x = np.pad(x, (win // 2, win // 2 + hop))
    columns = len(samples) // hop + 1
    frames = np.lib.stride_tricks.sliding_window_view(x, win)[::hop][:columns]
    power = np.abs(np.fft.rfft(frames * np.hanning(win).astype(np.float32), n=n_fft, axis=1)) ** 2
    freqs = np.fft.rfftfreq(n_fft, 1.0 / SAMPLING_RATE)
    keep = freqs <= max_frequency
    db = 10.0 * np.log10(power[:, keep].T + 1e-12)
    return np.maximum(db, db.max() - dynamic_range), hop / SAMPLING_RATE, freqs[keep]


def mel_spectrogram(samples: np.ndarray) -> np.ndarray:
    """The model's 80-bin log-mel filterbank, shape (80, frames)."""
    from zipa.audio.features import compute_fbank

    feats, _ = compute_fbank([samples])
    return feats[0].numpy().T


# ---------------------------------------------------------------------------------------------
# The figure
# ---------------------------------------------------------------------------------------------


def _confidence_colormap():
    from matplotlib import colormaps
    from matplotlib.colors import ListedColormap

    # The light middle of RdYlGn: labels stay readable on every shade.
    colors = colormaps["RdYlGn"](np.linspace(0.15, 0.85, 256))
    colors[:, :3] = 0.45 * colors[:, :3] + 0.55  # pastel
    return ListedColormap(colors, name="zipa_confidence")


def _draw_tier(
    ax: Axes,
    intervals: Sequence[Interval],
    name: str,
    view: tuple[float, float],
    shade: bool,
    fontsize: float,
) -> None:
    from matplotlib.collections import PatchCollection
    from matplotlib.colors import Normalize
    from matplotlib.patches import Rectangle

    lo, hi = view
    visible = [iv for iv in intervals if iv.end > lo and iv.start < hi]
    # Clip to the view, drop overlaps; fill_tier's gap intervals carry an empty label.
    shifted = [Interval(iv.label, iv.start - lo, iv.end - lo, iv.confidence) for iv in visible]
    clipped = [
        Interval(iv.label, iv.start + lo, iv.end + lo, iv.confidence) for iv in fill_tier(shifted, hi - lo) if iv.label
    ]
    ax.set_ylim(0, 1)
    ax.set_yticks([])
    ax.set_ylabel(name, rotation=0, ha="right", va="center", fontsize=fontsize)
    if shade and clipped:
        boxes = PatchCollection(
            [Rectangle((iv.start, 0.0), iv.end - iv.start, 1.0) for iv in clipped],
            cmap=_confidence_colormap(),
            norm=Normalize(0.0, 1.0),
            linewidths=0,
            zorder=0,
        )
        boxes.set_array(np.array([iv.confidence for iv in clipped]))
        boxes.set_label("confidence")
        ax.add_collection(boxes)
    for iv in clipped:
        ax.text((iv.start + iv.end) / 2, 0.5, iv.label, ha="center", va="center", fontsize=fontsize, clip_on=True)
    edges = sorted({t for iv in clipped for t in (iv.start, iv.end) if lo < t < hi})
    xs = np.repeat(np.asarray(edges, dtype=float), 3)
    ys = np.tile([0.0, 1.0, np.nan], len(edges))
    xs[2::3] = np.nan
    ax.plot(xs, ys, color="black", linewidth=0.9, label="boundaries")


def alignment(
    audio: AudioItem,
    alignment: Alignment,
    sampling_rate: int | None = None,
    title: str | None = None,
    *,
    spectrogram: str = "linear",
    max_frequency: float = 5000.0,
    dynamic_range: float = 50.0,
    words: bool = True,
    shade: bool = True,
    start: float | None = None,
    end: float | None = None,
    figsize: tuple[float, float] | None = None,
    fontsize: float = 10.0,
    cmap: str = "Greys",
) -> Figure:
    """A spectrogram of ``audio`` with ``alignment``'s phone and word tiers under it.

    ``audio``: a file path, or an array at ``sampling_rate`` (default 16 kHz).
    ``alignment``: a `zipa.decoding.timestamps.Alignment` (e.g. ``model.timestamps([audio])[0]``).
    ``spectrogram``: ``"linear"`` (Praat-like, up to ``max_frequency`` Hz, ``dynamic_range``
    dB) or ``"mel"`` (the model's 80-bin log-mel features, same dynamic range).
    ``words=False`` leaves out the word tier; ``shade=False`` the confidence shading.
    ``start``/``end`` (seconds) show part of the file (default all of it: x limits
    [0, duration]). ``figsize`` defaults to a width that grows with the time shown.

    Returns a `matplotlib.figure.Figure` (axes: spectrogram, phones, words), not attached to
    pyplot: save it with ``fig.savefig("a.png")``, or show it as a notebook cell's value
    (after ``%matplotlib inline``). Raises ImportError when matplotlib is missing.
    """
    Figure = _figure_class()
    if spectrogram not in SPECTROGRAMS:
        raise ValueError(f"spectrogram must be one of {', '.join(SPECTROGRAMS)}, got {spectrogram!r}")
    samples = _samples(audio, sampling_rate)
    duration = len(samples) / SAMPLING_RATE
    lo = 0.0 if start is None else max(0.0, float(start))
    hi = duration if end is None else min(duration, float(end))
    if hi <= lo:
        raise ValueError(f"nothing to show between {lo:.3f} s and {hi:.3f} s (the audio lasts {duration:.3f} s)")
    part = samples[int(round(lo * SAMPLING_RATE)) : int(round(hi * SAMPLING_RATE))]

    width = hi - lo
    if figsize is None:
        figsize = (float(np.clip(2.2 * width + 1.5, 6.0, 24.0)), 4.2 if words else 3.6)
    tiers = [("phones", alignment.phones, shade)] + ([("words", alignment.words, False)] if words else [])
    fig = Figure(figsize=figsize, layout="constrained")
    axes = fig.subplots(
        1 + len(tiers),
        1,
        sharex=True,
        squeeze=False,
        gridspec_kw={"height_ratios": [4.0] + [0.7] * len(tiers)},
    )[:, 0]
    fig.get_layout_engine().set(h_pad=0.02, hspace=0.0)

    spec_ax = axes[0]
    if spectrogram == "linear":
        db, hop, freqs = linear_spectrogram(part, max_frequency, dynamic_range)
        half = hop / 2
        spec_ax.imshow(
            db,
            origin="lower",
            aspect="auto",
            cmap=cmap,
            interpolation="bilinear",
            extent=(lo - half, lo + (db.shape[1] - 1) * hop + half, freqs[0], freqs[-1]),
        )
        spec_ax.set_ylabel("frequency (Hz)", fontsize=fontsize)
    else:
        mel = mel_spectrogram(part)
        mel = np.maximum(mel, mel.max() - dynamic_range * np.log(10) / 10)  # natural-log energies
        spec_ax.imshow(
            mel,
            origin="lower",
            aspect="auto",
            cmap=cmap,
            interpolation="nearest",
            extent=(lo, lo + mel.shape[1] * MEL_FRAME_SHIFT, 0, mel.shape[0]),
        )
        spec_ax.set_ylabel("mel bin", fontsize=fontsize)
    spec_ax.tick_params(labelsize=fontsize * 0.85)
    if words:
        for t in sorted({t for w in alignment.words for t in (w.start, w.end) if lo < t < hi}):
            spec_ax.axvline(t, color="tab:blue", linestyle=":", linewidth=0.9, alpha=0.8)

    for ax, (name, intervals, shaded) in zip(axes[1:], tiers):
        _draw_tier(ax, intervals, name, (lo, hi), shaded, fontsize)
    spec_ax.set_xlim(lo, hi)
    for ax in axes[:-1]:
        ax.tick_params(labelbottom=False)
    axes[-1].set_xlabel("time (s)", fontsize=fontsize)
    axes[-1].tick_params(labelsize=fontsize * 0.85)
    if title:
        spec_ax.set_title(title, fontsize=fontsize * 1.1)
    return fig


_alignment_figure = alignment  # `alignment` is also a parameter name below


def save_alignment(
    audio: AudioItem,
    alignment: Alignment,
    path: str | Path,
    sampling_rate: int | None = None,
    dpi: float = 100,
    **kwargs,
) -> Path:
    """Draw `alignment` and write it atomically to ``path`` (the format from its suffix: png,
    svg, pdf...; png when it has none). ``kwargs`` go to `alignment`. Returns ``path``."""
    path = Path(path)
    fig = _alignment_figure(audio, alignment, sampling_rate, **kwargs)
    fmt = path.suffix[1:].lower() or "png"
    with open_atomic(path, "wb") as f:
        fig.savefig(f, format=fmt, dpi=dpi)
    return path
