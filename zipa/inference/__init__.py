"""Audio in, phones out: the one path every front end shares.

- :mod:`zipa.inference.transcriber`  the Transcriber: audio -> features -> encoder -> search -> phones
- :mod:`zipa.inference.long_audio`   fixed windows with overlap for long files, bounded memory
- :mod:`zipa.decoding.timestamps`   frames -> times, phone and word intervals
- :mod:`zipa.inference.forced`       forced alignment: given transcripts (IPA, text via G2P, TextGrid tiers) -> times
- :mod:`zipa.inference.writers`      txt, tsv, jsonl, CTM and TextGrid output
- :mod:`zipa.data.textgrid`     Praat TextGrids read (long and short text formats) and written
- :mod:`zipa.inference.resumable`    line outputs written file by file, read back by --resume
- :mod:`zipa.utils.progress`     progress as a bar on a terminal, as log lines elsewhere
- :mod:`zipa.hub.pretrained`   the released ZIPA models (Hugging Face Hub cache)
- :mod:`zipa.inference.zipa_api`     the original ZIPA API (``initialize_model``, ``inference``)
"""
