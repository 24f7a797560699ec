#!/usr/bin/env python3
"""Train a ZIPA transducer model (Zipa-T) with the pruned RNN-T loss on lhotse shar data.

    python zipformer_transducer/train.py --world-size 2 --num-epochs 30 --exp-dir exp/transducer \\
        --use-transducer True --use-ctc False --context-size 2 --prune-range 5 \\
        --train-shar-dirs data/train --dev-shar-dirs data/dev --max-duration 600

The flags and their defaults are ZIPA's train.py's (and icefall's for the CR-CTC flags it lacks).
Multi-node: torchrun --nnodes N --nproc-per-node G ... zipformer_transducer/train.py <same flags>.
Output frame rate 25 Hz (output_downsampling_factor=2).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data_module import AsrDataModule
from zipa.train.recipe import ZIPA_MODEL_DEFAULTS, run_training, training_parser

DESCRIPTION = __doc__.splitlines()[0]
TRAINING_DEFAULTS = dict(cr_loss_scale=0.2, time_mask_ratio=2.5)  # icefall's zipformer/train.py


def get_parser():
    return training_parser(DESCRIPTION, AsrDataModule, ZIPA_MODEL_DEFAULTS, TRAINING_DEFAULTS)


if __name__ == "__main__":
    run_training(DESCRIPTION, AsrDataModule, 2, ZIPA_MODEL_DEFAULTS, TRAINING_DEFAULTS)
