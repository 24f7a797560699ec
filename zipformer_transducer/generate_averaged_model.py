#!/usr/bin/env python3
"""Average training checkpoints into one bare state_dict (.pth) plus config.json, loadable
by zipa_transducer_inference.initialize_model.

    python zipformer_transducer/generate_averaged_model.py --exp-dir exp/transducer --iter 500000 --avg 10
    python zipformer_transducer/generate_averaged_model.py --exp-dir exp/transducer --epoch 30 --avg 5 \\
        --use-averaged-model True

The default output is <exp-dir>/averaged-iter-<N>-avg-<K>.pth (or -epoch-<E>-). The flags and
defaults are ZIPA's generate_averaged_model.py's (--epoch 30 --avg 9, averaging through
model_avg: --use-averaged-model False for the plain mean of the checkpoints).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from zipa.train.averaging import get_parser as averaging_parser
from zipa.train.averaging import main

DESCRIPTION = __doc__.splitlines()[0]


def get_parser():
    return averaging_parser(DESCRIPTION)


if __name__ == "__main__":
    sys.exit(main(description=DESCRIPTION))
