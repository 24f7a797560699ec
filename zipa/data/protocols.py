"""What training and test-set decoding use of a data module, as a `typing.Protocol`.

A recipe passes its data module *class* (`zipa.data.module.AsrDataModule`, re-exported by the
root ``data_module.py``) to `zipa.train.recipe.run_training` and
`zipa.train.test_sets.main`, which call the members below and nothing else; another class
with these members (say, for another corpus format) can take its place without inheriting from
anything. tests/test_protocols.py checks that `AsrDataModule` conforms.

A module of its own, not part of `zipa.data.module`, so that the training loop and the decode
scripts can name the interface without importing lhotse and the data stack behind the class.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from lhotse import CutSet

    from zipa.data.dataset import BatchLoader


class DataModule(Protocol):
    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        """Register the module's command-line flags (before `parser.parse_args`)."""
        ...

    def __init__(
        self,
        args: argparse.Namespace,
        *,
        world_size: int | None = ...,
        rank: int | None = ...,
        output_downsampling_factor: int = ...,
        ctc: bool = ...,
    ) -> None:
        """`args` as parsed with `add_arguments`' flags; `world_size`/`rank` for the samplers
        (left out when decoding); the model's `output_downsampling_factor` and whether a CTC
        loss is computed, for the filter that drops cuts too short for their labels."""
        ...

    def train_cuts(self) -> CutSet: ...

    def unsup_cuts(self) -> CutSet:
        """The pseudo-labelled cuts (read only with --use-unsup-cr-ctc)."""
        ...

    def dev_cuts(self) -> Mapping[str, CutSet]:
        """Dev sets by name; empty when there are none (validation is then skipped)."""
        ...

    def test_cuts(self) -> Mapping[str, CutSet]:
        """Test sets by name."""
        ...

    def train_dataloaders(self, cuts_train: CutSet, *, sampler_state_dict: dict[str, Any] | None = ...) -> BatchLoader:
        """Batches for training; `loader.sampler` has `set_epoch` and a `state_dict` that
        `sampler_state_dict` restores when resuming mid-epoch."""
        ...

    def valid_dataloaders(self, cuts_valid: CutSet | Mapping[str, CutSet]) -> BatchLoader:
        """Batches of all the dev sets together."""
        ...

    def test_dataloaders(self, cuts: CutSet) -> BatchLoader:
        """Batches of one test set."""
        ...
