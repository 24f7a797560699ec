"""Samplers whose ``state_dict`` is exact for the batches the training loop has received.

lhotse's ``DynamicBucketingSampler`` / ``SimpleCutSampler`` run in the training process and
hand batches (``CutSet`` objects) to the DataLoader workers. Their own ``state_dict()`` counts
the batches *sampled*, which runs ahead of the batches *trained on* by the DataLoader's
prefetch (``num_workers * prefetch_factor`` batches), so a resumed run would skip those.
The samplers here attach the state after each batch to that batch (``cuts.sampler_state``);
:class:`zipa.data.dataset.IpaAsrDataset` passes it on as ``batch["sampler_state"]`` and
:class:`zipa.data.dataset.BatchLoader` hands it back with :meth:`mark_consumed` as the loop
receives the batch. ``state_dict()`` then describes exactly the batches received so far;
``load_state_dict()`` (lhotse's fast-forward) makes the next batch the one after them.

Shard order: ``CutSet.from_shar(shuffle_shards=True, stateful_shuffle=True)`` reshuffles the
shard list on every pass with ``seed + pass count``. A fresh process starts counting at 0, so a
run resumed in epoch 3 would read the shards in epoch 0's order. These samplers set the pass
count of every shar reader under their cuts to the sampler's epoch whenever an epoch starts,
which makes the shard order a function of (seed, epoch) and the restored batches identical.
"""

from __future__ import annotations

import copy
import logging
from itertools import islice
from typing import TYPE_CHECKING, Any

from lhotse import CutSet
from lhotse.dataset import DynamicBucketingSampler, SimpleCutSampler

logger = logging.getLogger(__name__)


def find_shar_iterators(cuts: Any) -> list[Any]:
    """The ``LazySharIterator`` readers inside a (lazy, possibly muxed/filtered) CutSet."""
    from lhotse.shar.readers.lazy import LazySharIterator

    found, stack, seen = [], [cuts], set()
    while stack:
        obj = stack.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        if isinstance(obj, LazySharIterator):
            found.append(obj)
        elif isinstance(obj, (list, tuple)):
            stack.extend(obj)
        elif type(obj).__module__.startswith("lhotse") and hasattr(obj, "__dict__"):
            # CutSet.cuts, LazyFilter.iterator, LazyIteratorMultiplexer.iterators, ...
            # (an eager CutSet keeps a dict of cuts, which is not walked).
            stack.extend(v for v in vars(obj).values() if not isinstance(v, dict))
    return found


if TYPE_CHECKING:  # what the mixin's super() is
    from lhotse.dataset.sampling.base import CutSampler as _SamplerBase
else:
    _SamplerBase = object


class _ResumableMixin(_SamplerBase):
    """See the module docstring. Mixed in before a lhotse sampler class."""

    def _init_resumable(self, cuts: Any) -> None:
        self._consumed_state: dict[str, Any] | None = None
        self._shar_readers = find_shar_iterators(cuts)

    def __iter__(self):
        if not self._just_restored_state:
            # A new pass over the data (a new epoch, or the replay inside load_state_dict).
            self._consumed_state = None
            for reader in self._shar_readers:
                reader.epoch = self.epoch
        return super().__iter__()

    def __next__(self) -> CutSet:
        batch = super().__next__()
        batch.sampler_state = super().state_dict()
        return batch

    def mark_consumed(self, state: dict[str, Any] | None) -> None:
        """Record that the loop received the batch that carried ``state``."""
        if state is not None:
            self._consumed_state = state

    def state_dict(self) -> dict[str, Any]:
        """State after the last batch the loop received (or lhotse's own before any)."""
        if self._consumed_state is not None:
            return copy.deepcopy(self._consumed_state)
        return super().state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._consumed_state = None
        # SimpleCutSampler replays without calling __iter__: set the shard epoch here too.
        for reader in self._shar_readers:
            reader.epoch = state_dict["epoch"]
        super().load_state_dict(copy.deepcopy(state_dict))  # lhotse pops keys from its argument


class ResumableBucketingSampler(_ResumableMixin, DynamicBucketingSampler):
    """``DynamicBucketingSampler`` with an exact, consumption-based ``state_dict``."""

    def __init__(self, cuts: CutSet, **kwargs):
        super().__init__(cuts, **kwargs)
        self._init_resumable(cuts)


class ResumableSimpleSampler(_ResumableMixin, SimpleCutSampler):
    """``SimpleCutSampler`` with an exact, consumption-based ``state_dict``."""

    def __init__(self, cuts: CutSet, **kwargs):
        super().__init__(cuts, **kwargs)
        self._init_resumable(cuts)


def make_sampler(
    cuts: CutSet,
    max_duration: float,
    bucketing: bool = True,
    shuffle: bool = True,
    drop_last: bool = False,
    num_buckets: int = 10,
    buffer_size: int | None = None,
    seed: int = 0,
    world_size: int | None = None,
    rank: int | None = None,
):
    """A resumable bucketing or simple sampler. ``world_size``/``rank`` None: lhotse reads them
    from torch.distributed (or WORLD_SIZE/RANK); each rank then gets its own batches."""
    if bucketing:
        return bucketing_sampler(
            ResumableBucketingSampler,
            cuts,
            num_buckets,
            max_duration=max_duration,
            shuffle=shuffle,
            drop_last=drop_last,
            buffer_size=buffer_size if buffer_size is not None else num_buckets * 150,
            seed=seed,
            world_size=world_size,
            rank=rank,
        )
    return ResumableSimpleSampler(
        cuts,
        max_duration=max_duration,
        shuffle=shuffle,
        drop_last=drop_last,
        seed=seed,
        world_size=world_size,
        rank=rank,
    )


def bucketing_sampler(cls, cuts: CutSet, num_buckets: int, **kwargs):
    """``cls(cuts, num_buckets=..., **kwargs)``, with fewer buckets for a set of fewer cuts
    (lhotse refuses more buckets than cuts)."""
    if num_buckets > 1:
        try:
            return cls(cuts, num_buckets=num_buckets, **kwargs)
        except AssertionError as e:
            if "number of buckets" not in str(e):
                raise
    durations = sorted(c.duration for c in islice(cuts, num_buckets))
    if not durations:
        raise ValueError("no cuts to sample from (were they all filtered out?)")
    if len(durations) > 1:
        logger.warning("only %d cuts: %d buckets instead of %d", len(durations), len(durations), num_buckets)
        return cls(cuts, num_buckets=len(durations), **kwargs)
    # One cut (or one bucket asked for): lhotse cannot estimate bins; any single boundary works.
    return cls(cuts, duration_bins=[durations[-1] + 1.0], **kwargs)


def make_eval_sampler(
    cuts: CutSet,
    max_duration: float,
    num_buckets: int = 10,
    world_size: int | None = None,
    rank: int | None = None,
) -> DynamicBucketingSampler:
    """Unshuffled bucketing sampler for dev/test (lhotse's, not resumable)."""
    return bucketing_sampler(
        DynamicBucketingSampler,
        cuts,
        num_buckets,
        max_duration=max_duration,
        shuffle=False,
        world_size=world_size,
        rank=rank,
    )
