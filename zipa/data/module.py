"""Lhotse shar data -> training / dev / test DataLoaders, for both ZIPA recipes (icefall style).

Usage in a training script::

    parser = get_parser()                      # the recipe's own flags (--seed, --bpe-model, ...)
    AsrDataModule.add_arguments(parser)
    args = parser.parse_args()
    data = AsrDataModule(args, output_downsampling_factor=1, ctc=True)   # CR-CTC recipe
    train_dl = data.train_dataloaders(data.train_cuts(), sampler_state_dict=state_or_None)
    valid_dl = data.valid_dataloaders(data.dev_cuts())
    for epoch in ...:
        train_dl.sampler.set_epoch(epoch - 1)
        for batch in train_dl: ...             # keys: see zipa/data/dataset.py
        # checkpoint: {"sampler": train_dl.sampler.state_dict(), ...}

Folders: every ``--*-shar-dirs`` entry is a folder of ``cuts.NNNNNN.jsonl.gz`` +
``recording.NNNNNN.tar`` shards (``zipa.data.shar.discover_shards``). Several training folders
are mixed with ``CutSet.mux`` (weights ``--train-weights``, default equal); each is read with
shuffled shards (``shuffle_shards=True, stateful_shuffle=True, seed=--seed + i``).
``--train-repeat true`` repeats each source forever, as ZIPA did (the loop then ends by its
own step limit). ``--use-mux`` (fine-tuning, as ZIPA's finetune.py) mixes the training data
with the original training data ``--mux-shar-dirs``, a share ``--mux-weight`` of the cuts from
the former; the original data repeats, an epoch ends with the new data. The pseudo-labelled
``--unsup-shar-dirs`` source is always repeated, since the CR-CTC loop zips it with the
supervised one.

Resuming (``--start-batch``): save ``train_dl.sampler.state_dict()`` (and the unsupervised
loader's) in each checkpoint; on resume pass it as ``sampler_state_dict``. The samplers of
:mod:`zipa.data.sampling` record the batches the loop has *received*, so the resumed run's first
batch is the one after the last batch trained on (lhotse replays the epoch up to there, which
reads the shards again but decodes no audio). The world size must be unchanged.

The logic lives in ``zipa/data/``; this module only turns flags into those objects.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from lhotse import CutSet
from torch.utils.data import DataLoader

from zipa.data.augment import PerturbVolume, make_spec_augment
from zipa.data.dataset import BatchLoader, IpaAsrDataset, SeedWorkers
from zipa.data.filters import CutFilter
from zipa.data.labels import LabelEncoder
from zipa.data.sampling import make_eval_sampler, make_sampler
from zipa.data.shar import read_shar_dir
from zipa.utils.flags import str2bool


def parse_named_dirs(entries: Sequence[str] | None) -> dict[str, Path]:
    """``["dev=/data/dev", "/data/test_fr"]`` -> ``{"dev": .../dev, "test_fr": .../test_fr}``."""
    out: dict[str, Path] = {}
    for entry in entries or []:
        name, sep, path = entry.partition("=")
        if not sep:
            name, path = Path(entry).name, entry
        if not name or not path:
            raise ValueError(f"expected NAME=DIR or DIR, got {entry!r}")
        if name in out:
            raise ValueError(f"two shar folders named {name!r}; name them with NAME=DIR")
        out[name] = Path(path)
    return out


class AsrDataModule:
    """Cut sets and DataLoaders from lhotse shar folders (see the module docstring)."""

    def __init__(
        self,
        args: argparse.Namespace,
        world_size: int | None = None,
        rank: int | None = None,
        output_downsampling_factor: int = 1,
        ctc: bool = True,
    ):
        """``world_size``/``rank`` go to the samplers (None: lhotse reads torch.distributed).
        ``output_downsampling_factor`` (1 CR-CTC, 2 transducer) and ``ctc`` (whether a CTC loss
        is computed; pruned RNN-T alone needs fewer frames) set the CTC-fit filter."""
        self.args = args
        self.world_size = world_size
        self.rank = rank
        self.output_downsampling_factor = output_downsampling_factor
        self.ctc = ctc
        self.labels = LabelEncoder(
            remove_diacritics=getattr(args, "remove_diacritics", False),
            normalize=getattr(args, "normalize_ipa", True),
            bpe_model=getattr(args, "bpe_model", None),
        )

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        group = parser.add_argument_group(
            title="ASR data related options",
            description="Lhotse shar folders, batching, sampling and augmentation.",
        )
        # Shared with the recipe: registered here only when the recipe has not done so.
        _add_once(
            parser,
            group,
            "--seed",
            type=int,
            default=42,
            help="Seed of shard shuffling, source mixing, samplers and workers.",
        )
        _add_once(
            parser,
            group,
            "--remove-diacritics",
            type=str2bool,
            default=False,
            help="Drop ʰ ʲ ʷ ʼ ː ˞ ˠ ˤ and combining diacritics from the labels (ZIPA's flag).",
        )

        group.add_argument(
            "--train-shar-dirs",
            type=str,
            nargs="+",
            default=[],
            help="Training shar folders (one or more; mixed with CutSet.mux).",
        )
        group.add_argument(
            "--train-weights",
            type=float,
            nargs="+",
            default=None,
            help="Mixing weights of --train-shar-dirs (default: equal).",
        )
        group.add_argument(
            "--train-repeat",
            type=str2bool,
            default=False,
            help="Repeat each training source forever, as ZIPA did; the loop "
            "then stops by its own step limit instead of at epoch ends.",
        )
        group.add_argument(
            "--use-mux",
            type=str2bool,
            default=False,
            help="Mix the training data with the original training data "
            "(--mux-shar-dirs), as ZIPA's finetune.py: an epoch is one pass over "
            "--train-shar-dirs; the original data is repeated as needed.",
        )
        group.add_argument(
            "--mux-shar-dirs",
            type=str,
            nargs="+",
            default=[],
            help="The original training data's shar folders (for --use-mux).",
        )
        group.add_argument(
            "--mux-weight",
            type=float,
            default=0.5,
            help="With --use-mux: the share of cuts drawn from --train-shar-dirs; the rest come from --mux-shar-dirs.",
        )
        group.add_argument(
            "--unsup-shar-dirs",
            type=str,
            nargs="+",
            default=[],
            help="Pseudo-labelled shar folders for unsupervised CR-CTC (repeated forever).",
        )
        group.add_argument(
            "--dev-shar-dirs",
            type=str,
            nargs="+",
            default=[],
            help="Dev shar folders as NAME=DIR (or DIR, named by its basename).",
        )
        group.add_argument(
            "--test-shar-dirs",
            type=str,
            nargs="+",
            default=[],
            help="Test shar folders as NAME=DIR (or DIR, named by its basename).",
        )
        group.add_argument(
            "--max-duration",
            type=float,
            default=600.0,
            help="Maximum pooled duration (seconds) of the cuts in one batch.",
        )
        group.add_argument(
            "--bucketing-sampler",
            type=str2bool,
            default=True,
            help="Batch cuts of similar duration (DynamicBucketingSampler).",
        )
        group.add_argument("--num-buckets", type=int, default=10, help="Buckets of the DynamicBucketingSampler.")
        group.add_argument(
            "--bucket-buffer-size",
            type=int,
            default=None,
            help="Cuts the bucketing sampler holds (default 150 x --num-buckets, ZIPA's buffer + shuffle buffer).",
        )
        group.add_argument("--shuffle", type=str2bool, default=True, help="Shuffle the training cuts each epoch.")
        group.add_argument(
            "--drop-last", type=str2bool, default=True, help="Drop the last, incomplete training batch of an epoch."
        )
        group.add_argument(
            "--num-workers", type=int, default=4, help="DataLoader workers (audio decoding, fbank, SpecAugment)."
        )
        group.add_argument(
            "--on-the-fly-feats",
            type=str2bool,
            default=True,
            help="Compute fbank in the workers with the inference Fbank; false: "
            "read the shards' precomputed 'features' field.",
        )
        group.add_argument(
            "--normalize-ipa",
            type=str2bool,
            default=True,
            help="Map labels onto the tokenizer's inventory (zipa.text.ipa.normalize_ipa).",
        )
        group.add_argument(
            "--min-utt-duration", type=float, default=0.0, help="Drop training/dev cuts shorter than this (seconds)."
        )
        group.add_argument(
            "--max-utt-duration",
            type=float,
            default=None,
            help="Drop training/dev cuts longer than this (seconds; default: no limit).",
        )
        group.add_argument(
            "--perturb-volume",
            type=str2bool,
            default=True,
            help="Scale training audio volume by 0.125-2 with p=0.5 (as ZIPA; on-the-fly features only).",
        )
        group.add_argument(
            "--enable-spec-aug",
            type=str2bool,
            default=True,
            help="SpecAugment in the training DataLoader (false for CR-CTC, which augments inside the model).",
        )
        group.add_argument(
            "--spec-aug-time-warp-factor",
            type=int,
            default=80,
            help="Time warp factor of SpecAugment; < 1 disables time warping.",
        )
        group.add_argument("--spec-aug-num-frame-masks", type=int, default=10, help="Number of time masks.")
        group.add_argument(
            "--spec-aug-frames-mask-size", type=int, default=100, help="Maximum frames of one time mask."
        )
        group.add_argument(
            "--spec-aug-max-frames-mask-fraction",
            type=float,
            default=0.15,
            help="Maximum fraction of the frames masked in time.",
        )
        group.add_argument("--spec-aug-num-feature-masks", type=int, default=2, help="Number of frequency masks.")
        group.add_argument(
            "--spec-aug-features-mask-size", type=int, default=27, help="Maximum mel bins of one frequency mask."
        )

    # -- cut sets ------------------------------------------------------------------------------

    def _read(self, path: str | Path, **kwargs) -> CutSet:
        fields = ("recording",) if self.args.on_the_fly_feats else ("features",)
        return read_shar_dir(path, fields=fields, **kwargs)

    def _mixed(self, dirs: Sequence[str], weights: Sequence[float] | None, repeat: bool, first_seed: int = 0) -> CutSet:
        seed = self.args.seed
        sources = [
            self._read(d, shuffle_shards=True, stateful_shuffle=True, seed=seed + first_seed + i)
            for i, d in enumerate(dirs)
        ]
        if repeat:
            sources = [s.repeat() for s in sources]
        if len(sources) == 1:
            return sources[0]
        if weights is not None and len(weights) != len(sources):
            raise ValueError(f"{len(weights)} weights for {len(sources)} shar folders")
        return CutSet.mux(*sources, weights=list(weights) if weights else None, seed=seed)

    def train_cuts(self) -> CutSet:
        """The training sources, shard-shuffled and mixed (lazy)."""
        if not self.args.train_shar_dirs:
            raise ValueError("no training data: pass --train-shar-dirs DIR [DIR ...]")
        logging.info("Training shar folders: %s", ", ".join(self.args.train_shar_dirs))
        cuts = self._mixed(self.args.train_shar_dirs, self.args.train_weights, self.args.train_repeat)
        return self._with_original_data(cuts) if getattr(self.args, "use_mux", False) else cuts

    def _with_original_data(self, new: CutSet) -> CutSet:
        """--use-mux: each cut comes from the new data with probability --mux-weight, else from
        the original data (repeated forever, with shard seeds of its own); the mix ends with the
        new data."""
        a = self.args
        if not a.mux_shar_dirs:
            raise ValueError("--use-mux needs the original training data: --mux-shar-dirs DIR [DIR ...]")
        if not 0.0 < a.mux_weight < 1.0:
            raise ValueError(f"--mux-weight is the new data's share, between 0 and 1 (exclusive); got {a.mux_weight}")
        logging.info(
            "Mixing in the original training data (share %.3g): %s", 1 - a.mux_weight, ", ".join(a.mux_shar_dirs)
        )
        original = self._mixed(a.mux_shar_dirs, None, repeat=True, first_seed=len(a.train_shar_dirs))
        return CutSet.mux(new, original, weights=[a.mux_weight, 1.0 - a.mux_weight], stop_early=True, seed=a.seed)

    def unsup_cuts(self) -> CutSet:
        """The pseudo-labelled sources for unsupervised CR-CTC, repeated forever (lazy)."""
        if not self.args.unsup_shar_dirs:
            raise ValueError("no unsupervised data: pass --unsup-shar-dirs DIR [DIR ...]")
        logging.info("Unsupervised shar folders: %s", ", ".join(self.args.unsup_shar_dirs))
        return self._mixed(self.args.unsup_shar_dirs, None, repeat=True)

    def dev_cuts(self) -> dict[str, CutSet]:
        return {name: self._read(d) for name, d in parse_named_dirs(self.args.dev_shar_dirs).items()}

    def test_cuts(self) -> dict[str, CutSet]:
        return {name: self._read(d) for name, d in parse_named_dirs(self.args.test_shar_dirs).items()}

    # -- filters and transforms ------------------------------------------------------------------

    def cut_filter(self, name: str = "train", check_labels: bool = True) -> CutFilter:
        """Duration limits + CTC fit (training, dev); encoder-length only for decoding."""
        return CutFilter(
            labels=self.labels,
            min_duration=self.args.min_utt_duration if check_labels else 0.0,
            max_duration=self.args.max_utt_duration if check_labels else None,
            output_downsampling_factor=self.output_downsampling_factor,
            ctc=self.ctc,
            check_labels=check_labels,
            name=name,
        )

    def make_spec_augment(self, time_mask_ratio: float = 1.0, time_warp_factor: int | None = None):
        """SpecAugment from the --spec-aug-* flags; CR-CTC uses ``time_warp_factor=0`` and its
        ``--time-mask-ratio`` here (ZIPA's ``get_spec_augment``)."""
        a = self.args
        return make_spec_augment(
            time_warp_factor=a.spec_aug_time_warp_factor if time_warp_factor is None else time_warp_factor,
            num_frame_masks=a.spec_aug_num_frame_masks,
            frames_mask_size=a.spec_aug_frames_mask_size,
            max_frames_mask_fraction=a.spec_aug_max_frames_mask_fraction,
            num_feature_masks=a.spec_aug_num_feature_masks,
            features_mask_size=a.spec_aug_features_mask_size,
            time_mask_ratio=time_mask_ratio,
        )

    # -- dataloaders -----------------------------------------------------------------------------

    def train_dataloaders(self, cuts_train: CutSet, sampler_state_dict: dict[str, Any] | None = None) -> BatchLoader:
        a = self.args
        # Volume perturbation acts on audio; precomputed features would be detached by it.
        perturb = a.perturb_volume and a.on_the_fly_feats
        cut_transforms = [PerturbVolume(p=0.5, scale_low=0.125, scale_high=2.0)] if perturb else []
        input_transforms = [self.make_spec_augment()] if a.enable_spec_aug else []
        dataset = IpaAsrDataset(
            labels=self.labels,
            on_the_fly_feats=a.on_the_fly_feats,
            cut_transforms=cut_transforms,
            input_transforms=input_transforms,
            seed=a.seed,
        )
        sampler = make_sampler(
            cuts_train.filter(self.cut_filter("train")),
            max_duration=a.max_duration,
            bucketing=a.bucketing_sampler,
            shuffle=a.shuffle,
            drop_last=a.drop_last,
            num_buckets=a.num_buckets,
            buffer_size=a.bucket_buffer_size,
            seed=a.seed,
            world_size=self.world_size,
            rank=self.rank,
        )
        if sampler_state_dict is not None:
            logging.info("Restoring the training sampler's state")
            sampler.load_state_dict(sampler_state_dict)
        # Derived from the main process's RNG, which the recipe seeds.
        seed = int(torch.randint(0, 100000, ()).item())
        return BatchLoader(
            DataLoader(
                dataset,
                sampler=sampler,
                batch_size=None,
                num_workers=a.num_workers,
                persistent_workers=False,
                worker_init_fn=SeedWorkers(seed),
            )
        )

    def _eval_loader(self, cuts: CutSet | Mapping[str, CutSet], name: str, check_labels: bool) -> BatchLoader:
        cuts = _concat(cuts)
        dataset = IpaAsrDataset(labels=self.labels, on_the_fly_feats=self.args.on_the_fly_feats)
        sampler = make_eval_sampler(
            cuts.filter(self.cut_filter(name, check_labels=check_labels)),
            max_duration=self.args.max_duration,
            num_buckets=self.args.num_buckets,
            world_size=self.world_size,
            rank=self.rank,
        )
        return BatchLoader(DataLoader(dataset, sampler=sampler, batch_size=None, num_workers=self.args.num_workers))

    def valid_dataloaders(self, cuts_valid: CutSet | Mapping[str, CutSet]) -> BatchLoader:
        """One loader over the dev cuts (a CutSet, or the dict of :meth:`dev_cuts`, joined)."""
        return self._eval_loader(cuts_valid, "dev", check_labels=True)

    def test_dataloaders(self, cuts: CutSet) -> BatchLoader:
        """A loader over one test set: every cut long enough for the encoder, in order of
        decreasing duration within the sampler's buckets."""
        return self._eval_loader(cuts, "test", check_labels=False)


def _concat(cuts: CutSet | Mapping[str, CutSet] | Sequence[CutSet]) -> CutSet:
    if isinstance(cuts, CutSet):
        return cuts
    parts = list(cuts.values()) if isinstance(cuts, Mapping) else list(cuts)
    if not parts:
        raise ValueError("no cut sets given (is --dev-shar-dirs empty?)")
    out = parts[0]
    for part in parts[1:]:
        out = out + part
    return out


def _add_once(parser: argparse.ArgumentParser, group, flag: str, **kwargs) -> None:
    if flag not in parser._option_string_actions:  # the recipe may define it already
        group.add_argument(flag, **kwargs)
