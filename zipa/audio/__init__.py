"""Audio in: reading files or arrays as 16 kHz mono float32 with errors that name the item
(:mod:`zipa.audio.load`), and the 80-bin filterbank ZIPA was trained on (:mod:`zipa.audio.features`)."""
