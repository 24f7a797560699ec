"""SpecAugment that also reports which frames it masked (CR-CTC scales its loss there)."""

from __future__ import annotations

import math
import random

import torch
import torch.nn as nn
from lhotse.dataset.signal_transforms import time_warp
from torch import Tensor


def _mask_spans(length: int, max_width: float, count: int) -> list:
    """`count` random [start, end) spans of width < max_width inside [0, length)."""
    spans = []
    for _ in range(count):
        width = random.randrange(max(int(max_width), 1))
        start = int(random.random() * (length - width))
        spans.append((start, start + width))
    return spans


class SpecAugment(nn.Module):
    """Per-utterance time warping, frequency masks and time masks (lhotse's SpecAugment, as
    ZIPA's recipe configures it), returning the augmented batch and a (batch, T) bool mask of
    the masked frames.

    With `supervision_segments` ((S, 3): sequence index, start frame, frames), warping is
    applied within each segment only; masks are applied per sequence.
    """

    def __init__(
        self,
        time_warp_factor: int | None = 80,
        num_feature_masks: int = 2,
        features_mask_size: int = 27,
        num_frame_masks: int = 10,
        frames_mask_size: int = 100,
        max_frames_mask_fraction: float = 0.15,
        p: float = 0.9,
    ):
        super().__init__()
        self.time_warp_factor = time_warp_factor
        self.num_feature_masks = num_feature_masks
        self.features_mask_size = features_mask_size
        self.num_frame_masks = num_frame_masks
        self.frames_mask_size = frames_mask_size
        self.max_frames_mask_fraction = max_frames_mask_fraction
        self.p = p

    def forward(self, features: Tensor, supervision_segments: Tensor | None = None) -> tuple[Tensor, Tensor]:
        features = features.clone()
        warp = self.time_warp_factor is not None and self.time_warp_factor >= 1
        if warp and supervision_segments is not None:
            for seq, start, frames in supervision_segments.tolist():
                if random.random() <= self.p:
                    segment = features[seq, start : start + frames]
                    features[seq, start : start + frames] = time_warp(segment, factor=self.time_warp_factor)
            warp = False
        time_mask = torch.zeros(features.shape[:2], dtype=torch.bool, device=features.device)
        for seq in range(features.shape[0]):
            if random.random() > self.p:
                continue
            if warp:
                features[seq] = time_warp(features[seq], factor=self.time_warp_factor)
            features[seq], time_mask[seq] = self._mask(features[seq])
        return features, time_mask

    def _mask(self, features: Tensor) -> tuple[Tensor, Tensor]:
        num_frames, num_bins = features.shape
        mean = features.mean()
        for start, end in _mask_spans(num_bins, self.features_mask_size, self.num_feature_masks):
            features[:, start:end] = mean
        time_mask = torch.zeros(num_frames, dtype=torch.bool, device=features.device)
        max_total = self.max_frames_mask_fraction * num_frames
        count = min(self.num_frame_masks, math.ceil(max_total / self.frames_mask_size))
        if count > 0:
            width = min(self.frames_mask_size, max_total // count)
            for start, end in _mask_spans(num_frames, width, count):
                features[start:end] = mean
                time_mask[start:end] = True
        return features, time_mask


def downsample_time_mask(time_mask: Tensor, output_downsampling_factor: int = 1) -> Tensor:
    """(N, T) frame mask -> (N, T', 1) at the encoder's output rate: a frame is masked if any
    input frame it sees through the conv front end is (max-pooling with the same kernels and
    strides), then pooled by `output_downsampling_factor`."""
    mask = time_mask.float().unsqueeze(1)
    mask = nn.functional.max_pool1d(mask, kernel_size=3, stride=1)  # T - 2
    mask = nn.functional.max_pool1d(mask, kernel_size=3, stride=2)  # (T - 3) // 2
    mask = nn.functional.max_pool1d(mask, kernel_size=3, stride=1)  # (T - 7) // 2
    if output_downsampling_factor > 1:
        factor = output_downsampling_factor
        mask = nn.functional.max_pool1d(mask, kernel_size=factor, stride=factor, ceil_mode=True)
    return mask.transpose(1, 2)
