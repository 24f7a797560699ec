#!/usr/bin/env python3
"""Train a ZIPA CR-CTC model (Zipa-Cr, Zipa-Cr-Ns) on lhotse shar data.

    python zipformer_crctc/train.py --world-size 2 --num-epochs 30 --exp-dir exp/crctc \\
        --use-ctc True --use-transducer False --use-cr-ctc True --enable-spec-aug False \\
        --train-shar-dirs data/train --dev-shar-dirs data/dev --max-duration 600

Multi-node: torchrun --nnodes N --nproc-per-node G ... zipformer_crctc/train.py <same flags>.
Output frame rate 50 Hz (output_downsampling_factor=1).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data_module import AsrDataModule
from zipa.train.recipe import run_training

if __name__ == "__main__":
    run_training(
        __doc__.splitlines()[0],
        AsrDataModule,
        output_downsampling_factor=1,
        model_defaults=dict(use_ctc=True, use_transducer=False),
        training_defaults=dict(use_cr_ctc=True, enable_spec_aug=False),
    )
