#!/usr/bin/env python3
"""Train a frame aligner for a model: phone times from a small head on its frozen encoder.

    python zipformer_crctc/train_aligner.py --model-path exp/demo_ctc/averaged.pth
    # writes exp/demo_ctc/averaged.aligner.pt; zipa align and zipa.load_model then use it

espeak-ng speaks train sentences of the demo corpus and says when each phone starts; the
aligner learns which phone sounds in each 10 ms of the encoder output. See zipa/train/aligner.py.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from zipa.train.aligner import main

if __name__ == "__main__":
    sys.exit(main(description=__doc__.splitlines()[0]))
