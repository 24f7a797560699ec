"""ZIPA transducer (Zipa-T) inference, as in the ZIPA README:

    from zipa_transducer_inference import initialize_model
    model = initialize_model("zipa_large_noncausal_500000_avg10.pth")   # tokenizer: the packaged one
    phones = model.inference([audio_16k])   # batched greedy search, [['wɜːld', ...], ...]

As a script: python zipa_transducer_inference.py --model M.pth a.wav b.flac ...
"""

import sys

from zipa.inference.zipa_api import ZipaModel, initialize_model, main

ZIPA_TRANSDUCER = ZipaModel

__all__ = ["ZIPA_TRANSDUCER", "initialize_model"]

if __name__ == "__main__":
    sys.exit(main(description="Transcribe audio files to IPA with a ZIPA transducer model."))
