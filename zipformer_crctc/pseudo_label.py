#!/usr/bin/env python3
"""Pseudo-label unlabelled audio with a ZIPA model: lhotse shar for noisy-student training.

    python zipformer_crctc/pseudo_label.py --shar-dirs data/unlabeled \\
        --model-path exp/crctc/averaged.pth --out-dir data/pseudo
    python zipformer_crctc/pseudo_label.py --audio-dirs recordings/ --model-path zipa-cr-large-500k \\
        --out-dir data/pseudo --world-size 4 --max-duration 1200 --min-confidence 0.6
    python zipformer_crctc/train.py ... --use-unsup-cr-ctc True --unsup-shar-dirs data/pseudo

Decodes --shar-dirs (cuts with recordings) and --audio-dirs (searched recursively) with the model
of --model-path (a file, a name from `zipa models`) or --exp-dir with --iter/--epoch and --avg;
writes the kept utterances to --out-dir as shar (16 kHz flac, the hypothesis as the supervision
text, its confidence in supervision.custom). Killed, the same command resumes where it stopped.
The summary is printed and written beside --out-dir (.NAME.summary.json). The flags of ZIPA's
ctc_decode_train_data.py are accepted too (--decoding-method names --decoding; the k2 ones are
answered with what to use instead). See zipa/train/pseudo_label.py.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from zipa.train.pseudo_label import get_parser as pseudo_label_parser
from zipa.train.pseudo_label import main

DESCRIPTION = __doc__.splitlines()[0]


def get_parser():
    return pseudo_label_parser(DESCRIPTION, "ctc")


if __name__ == "__main__":
    main(DESCRIPTION, recipe="ctc")
