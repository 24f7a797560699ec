"""Pictures of alignments: a spectrogram with Praat-like phone and word tiers under it.

    import zipa, zipa.plot
    model = zipa.load_model("zipa-cr-small-500k")
    alignment = model.timestamps(["speech.wav"])[0]
    fig = zipa.plot.alignment("speech.wav", alignment)        # a matplotlib Figure
    fig.savefig("speech.png")
    zipa.plot.segment("speech.wav", alignment.phones[3])      # that phone's samples (16 kHz)

matplotlib is optional (``pip install 'zipa-phones[plot]'``) and imported on first use; the
figures are built without pyplot, so they work under any backend, headless included.
"""

from zipa.plot.figure import alignment, save_alignment, segment

__all__ = ["alignment", "save_alignment", "segment"]
