"""The training/evaluation dataset: a sampled ``CutSet`` -> one batch dict.

Batches have the keys of lhotse's ``K2SpeechRecognitionDataset`` (what ZIPA's recipes read),
plus the labels already tokenised::

    batch["inputs"]                      (N, T, 80) float32 fbank, padded with log(1e-10)
    batch["supervisions"]["sequence_idx"] (S,) int32  row of ``inputs`` of each supervision
    batch["supervisions"]["start_frame"]  (S,) int32
    batch["supervisions"]["num_frames"]   (S,) int32  feature lengths (the encoder's x_lens)
    batch["supervisions"]["text"]         S normalised IPA strings
    batch["supervisions"]["token_ids"]    S lists of token ids (``Tokenizer.encode`` of text)
    batch["supervisions"]["language"]     S language codes (None where unknown)
    batch["supervisions"]["cut"]          S lhotse cuts

Cuts come sorted by decreasing duration. Features are computed in the DataLoader workers with
the same lhotse ``Fbank()`` as inference (:func:`zipa.audio.features.get_fbank`), or read from the
shards' ``features`` field when ``on_the_fly_feats=False``. A cut whose audio (or features)
cannot be read -- a corrupt flac in a shard, say -- is left out of its batch with a warning and
counted in :attr:`IpaAsrDataset.num_unreadable` (per worker process); a batch whose every cut
failed comes back without ``inputs`` and :class:`BatchLoader` drops it.

Random transforms (volume perturbation, SpecAugment) run with the global generators seeded from
(``seed``, epoch, the batch's cut ids) and restored afterwards (:mod:`zipa.data.augment`):
a batch is augmented the same way whichever worker makes it, and after a resume.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from zipa.data.augment import batch_seed, seeded_rngs
from zipa.data.labels import LabelEncoder

logger = logging.getLogger(__name__)

SAMPLING_RATE = 16000


class IpaAsrDataset(torch.utils.data.Dataset):
    def __init__(
        self,
        labels: LabelEncoder | None = None,
        on_the_fly_feats: bool = True,
        cut_transforms: Sequence[Callable] = (),
        input_transforms: Sequence[Callable] = (),
        return_cuts: bool = True,
        seed: int | None = 0,
    ):
        super().__init__()
        self.labels = labels if labels is not None else LabelEncoder()
        self.on_the_fly_feats = on_the_fly_feats
        self.cut_transforms = list(cut_transforms)
        self.input_transforms = list(input_transforms)
        self.return_cuts = return_cuts
        self.seed = seed
        self.num_unreadable = 0

    def __getitem__(self, cuts) -> dict[str, Any]:
        state = getattr(cuts, "sampler_state", None)
        if self.seed is None or not (self.cut_transforms or self.input_transforms):
            return self._batch(cuts, state)
        epoch = state["epoch"] if state is not None else 0
        with seeded_rngs(batch_seed(self.seed, epoch, [c.id for c in cuts])):
            return self._batch(cuts, state)

    def _batch(self, cuts, state: dict[str, Any] | None) -> dict[str, Any]:
        from lhotse import CutSet

        cuts = cuts.sort_by_duration(ascending=False)
        for tnfm in self.cut_transforms:
            cuts = tnfm(cuts)
        cuts = cuts.sort_by_duration(ascending=False)

        if self.on_the_fly_feats:
            feats, ok = self._fbank(cuts)
        else:
            feats, ok = self._precomputed(cuts)
        batch: dict[str, Any] = {}
        if state is not None:
            batch["sampler_state"] = state
        if not ok:
            return batch
        cuts = CutSet.from_cuts(ok)
        inputs = _collate(feats)
        intervals = self._strategy().supervision_intervals(cuts)
        segments = torch.stack(list(intervals.values()), dim=1)
        for tnfm in self.input_transforms:
            inputs = tnfm(inputs, supervision_segments=segments)

        texts, token_ids, languages = [], [], []
        for cut in cuts:
            for sup in cut.supervisions:
                text, ids = self.labels.encode(sup.text)
                texts.append(text)
                token_ids.append(ids)
                languages.append(sup.language)
        supervisions: dict[str, Any] = {"text": texts, "token_ids": token_ids, "language": languages}
        supervisions.update(intervals)
        if self.return_cuts:
            supervisions["cut"] = [cut for cut in cuts for _ in cut.supervisions]
        batch["inputs"] = inputs
        batch["supervisions"] = supervisions
        return batch

    # -- inputs ---------------------------------------------------------------------------

    def _strategy(self):
        from lhotse.dataset import OnTheFlyFeatures, PrecomputedFeatures

        if self.on_the_fly_feats:
            from zipa.audio.features import get_fbank

            return OnTheFlyFeatures(get_fbank())
        return PrecomputedFeatures()

    def _fbank(self, cuts) -> tuple[list[torch.Tensor], list[Any]]:
        from zipa.audio.features import get_fbank

        audios, ok = [], []
        for cut in cuts:
            try:
                if cut.sampling_rate != SAMPLING_RATE:
                    cut = cut.resample(SAMPLING_RATE)
                audio = np.asarray(cut.load_audio(), dtype=np.float32)
                audio = audio[0] if audio.shape[0] == 1 else audio.mean(axis=0)
                if audio.size == 0 or not np.isfinite(audio).all():
                    raise ValueError("empty or non-finite audio")
            except Exception as e:
                self._unreadable(cut, e)
                continue
            audios.append(torch.from_numpy(audio))
            ok.append(cut)
        if not ok:
            return [], []
        with torch.no_grad():
            feats = get_fbank().extract_batch(audios, sampling_rate=SAMPLING_RATE)
        feats = list(feats) if isinstance(feats, torch.Tensor) else feats
        return [torch.as_tensor(f) for f in feats], ok

    def _precomputed(self, cuts) -> tuple[list[torch.Tensor], list[Any]]:
        feats, ok = [], []
        for cut in cuts:
            try:
                feats.append(torch.from_numpy(np.asarray(cut.load_features(), dtype=np.float32)))
            except Exception as e:
                self._unreadable(cut, e)
                continue
            ok.append(cut)
        return feats, ok

    def _unreadable(self, cut, error: BaseException) -> None:
        self.num_unreadable += 1
        logger.warning(
            "skipping cut %s: cannot read its %s (%s: %s); %d cut(s) skipped so far in this process",
            cut.id,
            "audio" if self.on_the_fly_feats else "features",
            type(error).__name__,
            " ".join(str(error).split())[:200],
            self.num_unreadable,
        )


def _collate(feats: list[torch.Tensor]) -> torch.Tensor:
    from lhotse.dataset.collation import collate_matrices
    from lhotse.utils import LOG_EPSILON

    # lhotse's OnTheFlyFeatures pads with log(1e-10), as ZIPA's training batches were.
    return collate_matrices(feats, padding_value=LOG_EPSILON)


class BatchLoader:
    """Iterate a DataLoader over :class:`IpaAsrDataset` for a training loop.

    Drops batches whose every cut was unreadable, and tells a resumable sampler
    (:mod:`zipa.data.sampling`) which batch the loop has received, so that
    ``loader.sampler.state_dict()`` saved in a checkpoint restores exactly. Other attributes
    (``sampler``, ``dataset``, ...) are the DataLoader's.
    """

    def __init__(self, dataloader: torch.utils.data.DataLoader):
        self.dataloader = dataloader

    def __iter__(self):
        # The DataLoader's iterator is made here, not at the first batch: it draws its base seed
        # from torch's global generator, and a training loop that restores that generator's
        # state (a resumed run) must know when the draw happens.
        return self._batches(iter(self.dataloader))

    def _batches(self, batches):
        sampler = self.dataloader.sampler
        for batch in batches:
            state = batch.pop("sampler_state", None)
            if state is not None and hasattr(sampler, "mark_consumed"):
                sampler.mark_consumed(state)
            if "inputs" in batch:
                yield batch

    def __len__(self) -> int:
        return len(self.dataloader)

    def __getattr__(self, name: str):
        if name == "dataloader":  # not set yet (e.g. during unpickling)
            raise AttributeError(name)
        return getattr(self.dataloader, name)


class SeedWorkers:
    """``worker_init_fn`` giving each DataLoader worker its own seed (``seed + worker_id``)."""

    def __init__(self, seed: int):
        self.seed = seed

    def __call__(self, worker_id: int) -> None:
        from lhotse.utils import fix_random_seed

        fix_random_seed(self.seed + worker_id)
