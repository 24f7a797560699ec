#!/usr/bin/env python3
"""Decode test sets with a ZIPA transducer model and write recogs/errs/metrics (PER, PFER).

    python zipformer_transducer/decode.py --exp-dir exp/transducer --epoch 30 --avg 5 \\
        --decoding-method greedy_search,modified_beam_search --beam-size 4 --test-shar-dirs data/test/*

fast_beam_search is not available: it needs k2's FSA machinery.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data_module import AsrDataModule
from zipa.train.test_sets import TRANSDUCER_METHODS, main

if __name__ == "__main__":
    main(__doc__.splitlines()[0], AsrDataModule, TRANSDUCER_METHODS, "greedy_search", output_downsampling_factor=2)
