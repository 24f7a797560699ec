#!/usr/bin/env python3
"""Decode test sets with a ZIPA transducer model and write recogs/errs/metrics (PER, PFER).

    python zipformer_transducer/decode.py --exp-dir exp/transducer --epoch 30 --avg 5 \\
        --decoding-method greedy_search,modified_beam_search --beam-size 4 --test-shar-dirs data/test/*

fast_beam_search is not available: it needs k2's FSA machinery.
"""

import argparse
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data_module import AsrDataModule  # noqa: E402
from zipa.decode_sets import TRANSDUCER_METHODS, add_decoding_arguments, run_decoding  # noqa: E402
from zipa.train.args import add_model_arguments, decoding_overrides  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_arguments(parser)
    add_decoding_arguments(parser, list(TRANSDUCER_METHODS), default="greedy_search")
    AsrDataModule.add_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    run_decoding(args, AsrDataModule, list(TRANSDUCER_METHODS), 2, decoding_overrides(args))


if __name__ == "__main__":
    main()
