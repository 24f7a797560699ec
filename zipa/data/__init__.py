"""Training data: lhotse shar shards in and out, label encoding, cut filters, datasets, samplers.

- :mod:`zipa.data.shar`     write shards from audio + IPA (atomic, resumable); find shards in a folder
- :mod:`zipa.data.text`     IPA label normalisation + tokenisation, the same for filters and batches
- :mod:`zipa.data.filters`  duration limits and the CTC-fit filter (counted, never per-cut noise)
- :mod:`zipa.data.dataset`  the dataset producing ``inputs`` / ``supervisions`` batches
- :mod:`zipa.data.sampling` resumable samplers (exact ``state_dict`` of the batches consumed)
- :mod:`zipa.data.augment`  SpecAugment built from ZIPA's settings

``data_module.py`` at the repository root wires these to command-line flags.
"""
