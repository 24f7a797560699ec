#!/usr/bin/env python3
"""Train a ZIPA transducer model (Zipa-T) with the pruned RNN-T loss on lhotse shar data.

    python zipformer_transducer/train.py --world-size 2 --num-epochs 30 --exp-dir exp/transducer \\
        --use-transducer True --use-ctc False --context-size 2 --prune-range 5 \\
        --train-shar-dirs data/train --dev-shar-dirs data/dev --max-duration 600

Multi-node: torchrun --nnodes N --nproc-per-node G ... zipformer_transducer/train.py <same flags>.
Output frame rate 25 Hz (output_downsampling_factor=2).
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
        output_downsampling_factor=2,
        model_defaults=dict(use_ctc=False, use_transducer=True),
        training_defaults=dict(use_cr_ctc=False),
    )
