#!/usr/bin/env python3
"""Decode test sets with a ZIPA CTC model and write recogs/errs/metrics (PER, PFER).

    python zipformer_crctc/ctc_decode.py --exp-dir exp/crctc --iter 800000 --avg 10 \\
        --decoding-method ctc-greedy-search --test-shar-dirs doreco=data/test/doreco
    python zipformer_crctc/ctc_decode.py --model-path zipa_large_crctc_500000_avg10.pth \\
        --decoding-method ctc-greedy-search,prefix-beam-search --test-shar-dirs data/test/*

Model flags (--num-encoder-layers ...) are accepted as in ZIPA; the architecture is read from
the checkpoint (or exp-dir/config.json), and given flags override what weights cannot show.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data_module import AsrDataModule
from zipa.train.test_sets import CTC_METHODS, main

if __name__ == "__main__":
    main(__doc__.splitlines()[0], AsrDataModule, CTC_METHODS, "ctc-greedy-search", output_downsampling_factor=1)
