"""80-dim log-mel filterbank features, computed exactly as the original ZIPA inference did.

The original called ``Fbank().extract_batch(list_of_1d_float32_tensors, sampling_rate=16000)``
and zero-padded the result with ``pad_sequence(batch_first=True)``. lhotse computes the batch on
zero-padded audio, so the last frames of a shorter clip depend on the rest of the batch (by up
to ~0.5 in log energy); we keep that batching rather than extracting clip by clip. What is left
is float rounding of the FFT between torch builds: against the original's stored features this
gives a relative L2 difference of ~4e-6, largest in near-silent mel bins.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

SAMPLING_RATE = 16000
NUM_MEL_BINS = 80
# One frame shift (10 ms). lhotse fails or returns no frame for clips much shorter than this.
MIN_SAMPLES = 160

_fbank = None


def get_fbank():
    """The module's lhotse ``Fbank()`` (default config), created on first use."""
    global _fbank
    if _fbank is None:
        from lhotse.features.kaldi.extractors import Fbank

        _fbank = Fbank()
    return _fbank


def compute_fbank(
    audios: Sequence[np.ndarray | torch.Tensor],
    device: str | torch.device | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Features of a batch of 16 kHz mono clips.

    Returns ``feats`` (N, T, 80) float32, zero-padded, and ``feat_lens`` (N,) int64, both on
    ``device`` (default CPU; extraction itself runs on CPU).
    """
    if len(audios) == 0:
        raise ValueError("compute_fbank: empty batch")
    samples = []
    for i, a in enumerate(audios):
        t = a if isinstance(a, torch.Tensor) else torch.from_numpy(np.asarray(a))
        t = t.detach().to("cpu", torch.float32).contiguous()
        if t.ndim != 1:
            raise ValueError(f"compute_fbank: item {i} must be 1-D, got shape {tuple(t.shape)}")
        if t.numel() < MIN_SAMPLES:
            raise ValueError(
                f"compute_fbank: item {i} is too short ({t.numel()} samples; at least {MIN_SAMPLES} = 10 ms needed)"
            )
        samples.append(t)

    with torch.no_grad():
        out = get_fbank().extract_batch(samples, sampling_rate=SAMPLING_RATE)
    # lhotse returns a stacked tensor when all clips have the same length, else a list.
    feats_list = list(out) if isinstance(out, torch.Tensor) else out
    feat_lens = torch.tensor([f.shape[0] for f in feats_list], dtype=torch.int64)
    feats = torch.nn.utils.rnn.pad_sequence(feats_list, batch_first=True)
    if device is not None:
        feats, feat_lens = feats.to(device), feat_lens.to(device)
    return feats, feat_lens
