"""ZIPA CR-CTC inference, as in the ZIPA README:

    from zipa_ctc_inference import initialize_model
    model = initialize_model("zipa_large_crctc_500000_avg10.pth")   # tokenizer: the packaged one
    phones = model.inference([audio_16k])   # [['wɜːld', ...], ...]

As a script: python zipa_ctc_inference.py --model M.pth a.wav b.flac ...
"""

import sys

from zipa.inference.zipa_api import ZipaModel, initialize_model, main

ZIPA_CTC = ZipaModel

__all__ = ["ZIPA_CTC", "initialize_model"]

if __name__ == "__main__":
    sys.exit(main(description="Transcribe audio files to IPA with a ZIPA CTC model."))
