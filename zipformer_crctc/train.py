#!/usr/bin/env python3
"""Train a ZIPA CR-CTC model (Zipa-Cr, Zipa-Cr-Ns) on lhotse shar data.

    python zipformer_crctc/train.py --world-size 2 --num-epochs 30 --exp-dir exp/crctc \\
        --use-ctc True --use-transducer False --use-cr-ctc True --enable-spec-aug False \\
        --train-shar-dirs data/train --dev-shar-dirs data/dev --max-duration 600

The flags and their defaults are ZIPA's train.py's: with no objective flag it trains a
transducer (--use-transducer True --use-ctc False --use-cr-ctc False), so state the objective.
Multi-node: torchrun --nnodes N --nproc-per-node G ... zipformer_crctc/train.py <same flags>.
Output frame rate 50 Hz (output_downsampling_factor=1).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data_module import AsrDataModule
from zipa.train.recipe import ZIPA_MODEL_DEFAULTS, run_training, training_parser

DESCRIPTION = __doc__.splitlines()[0]
TRAINING_DEFAULTS: dict = {}


def get_parser():
    return training_parser(DESCRIPTION, AsrDataModule, ZIPA_MODEL_DEFAULTS, TRAINING_DEFAULTS)


if __name__ == "__main__":
    run_training(DESCRIPTION, AsrDataModule, 1, ZIPA_MODEL_DEFAULTS, TRAINING_DEFAULTS)
