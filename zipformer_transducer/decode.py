#!/usr/bin/env python3
"""Decode test sets with a ZIPA transducer model and write recogs/errs/metrics (PER, PFER).

    python zipformer_transducer/decode.py --exp-dir exp/transducer --epoch 30 --avg 5 \\
        --decoding-method greedy_search,modified_beam_search --beam-size 4 --test-shar-dirs data/test/*

The flags and defaults are ZIPA's decode.py's (--epoch 30 --avg 15, averaging through
model_avg). fast_beam_search and LM shallow fusion/rescoring need k2 or an LM: their flags are
accepted and answered with what to use instead.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data_module import AsrDataModule
from zipa.train.test_sets import TRANSDUCER_DECODING, decoding_parser, main

DESCRIPTION = __doc__.splitlines()[0]


def get_parser():
    return decoding_parser(DESCRIPTION, AsrDataModule, **TRANSDUCER_DECODING)


if __name__ == "__main__":
    main(DESCRIPTION, AsrDataModule, output_downsampling_factor=2, **TRANSDUCER_DECODING)
