#!/usr/bin/env python3
"""Pseudo-label unlabelled audio with a ZIPA transducer model: lhotse shar for noisy-student training.

    python zipformer_transducer/pseudo_label.py --shar-dirs data/unlabeled \\
        --model-path exp/transducer/averaged.pth --out-dir data/pseudo --decoding beam --beam-size 4

The same command as zipformer_crctc/pseudo_label.py (see there and zipa/train/pseudo_label.py):
with a transducer model the transducer head decodes (greedy_search, or modified_beam_search
with --decoding beam), and a token's confidence is the joiner's probability where it was emitted.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from zipa.train.pseudo_label import get_parser as pseudo_label_parser
from zipa.train.pseudo_label import main

DESCRIPTION = __doc__.splitlines()[0]


def get_parser():
    return pseudo_label_parser(DESCRIPTION, "transducer")


if __name__ == "__main__":
    main(DESCRIPTION, recipe="transducer")
