"""SpecAugment with ZIPA's settings.

Data-level (``--enable-spec-aug``, transducer recipe): lhotse ``SpecAugment`` with time warp
80, 10 frame masks of at most 100 frames covering at most 15% of the frames, and 2 feature
masks of at most 27 bins. CR-CTC applies SpecAugment inside the model instead, to two copies of
each batch, with no time warp there (it is done separately) and ``time_mask_ratio`` (ZIPA's
``--time-mask-ratio``, 2.0) times the frame masks and masked fraction.

Reproducibility: the dataset runs its random transforms (volume perturbation, SpecAugment)
under :func:`seeded_rngs` with :func:`batch_seed` of (run seed, epoch, the batch's cut ids), so
augmentation is a function of the batch, the same with any number of DataLoader workers and
after a resume, and the training process's own random streams are not disturbed.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import torch


def make_spec_augment(
    time_warp_factor: int = 80,
    num_frame_masks: int = 10,
    frames_mask_size: int = 100,
    max_frames_mask_fraction: float = 0.15,
    num_feature_masks: int = 2,
    features_mask_size: int = 27,
    time_mask_ratio: float = 1.0,
):
    from lhotse.dataset import SpecAugment

    return SpecAugment(
        time_warp_factor=time_warp_factor,
        num_frame_masks=int(num_frame_masks * time_mask_ratio),
        frames_mask_size=frames_mask_size,
        max_frames_mask_fraction=max_frames_mask_fraction * time_mask_ratio,
        num_feature_masks=num_feature_masks,
        features_mask_size=features_mask_size,
    )


class PerturbVolume:
    """Scale each cut's volume by U(scale_low, scale_high) with probability ``p`` (ZIPA: 0.5,
    0.125, 2.0). Unlike lhotse's transform, which owns a generator seeded from the OS, this one
    draws from the global ``random``, which :class:`zipa.data.dataset.IpaAsrDataset` seeds per
    batch, so a resumed run perturbs exactly as the original did. Cut ids are kept."""

    def __init__(self, p: float = 0.5, scale_low: float = 0.125, scale_high: float = 2.0):
        self.p = p
        self.scale_low = scale_low
        self.scale_high = scale_high

    def __call__(self, cuts):
        from lhotse import CutSet

        out = []
        for cut in cuts:
            if random.random() <= self.p:
                factor = self.scale_low + random.random() * (self.scale_high - self.scale_low)
                cut = cut.perturb_volume(factor=factor, affix_id=False)
            out.append(cut)
        return CutSet.from_cuts(out)


def batch_seed(seed: int, epoch: int, cut_ids: Sequence[str]) -> int:
    """A seed that depends only on the run's seed, the epoch and which cuts form the batch."""
    key = f"{seed}|{epoch}|" + "|".join(sorted(cut_ids))
    return int.from_bytes(hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest(), "little") >> 1


@contextmanager
def seeded_rngs(seed: int) -> Iterator[None]:
    """Seed Python's, NumPy's and torch's (CPU) global generators for the block, then put back
    their previous states, so that the caller's random streams are untouched."""
    py_state, np_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        random.seed(seed)
        np.random.seed(seed % 2**32)
        torch.manual_seed(seed)
        try:
            yield
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)
