"""Training data: lhotse shar shards in and out, label encoding, cut filters, datasets, samplers.

- :mod:`zipa.data.shar`        write shards from audio + IPA (atomic, resumable); find shards in a folder
- :mod:`zipa.data.labels`      IPA label normalisation + tokenisation, the same for filters and batches
- :mod:`zipa.data.filters`     duration limits and the CTC-fit filter (counted, never per-cut noise)
- :mod:`zipa.data.dataset`     the dataset producing ``inputs`` / ``supervisions`` batches
- :mod:`zipa.data.sampling`    resumable samplers (exact ``state_dict`` of the batches consumed)
- :mod:`zipa.data.augment`     SpecAugment built from ZIPA's settings
- :mod:`zipa.data.module`      the data module: command-line flags -> cut sets and DataLoaders
- :mod:`zipa.data.protocols`   what training and test-set decoding use of a data module (``DataModule``)
- :mod:`zipa.data.demo_corpus` the embedded multilingual espeak-ng demo corpus
- :mod:`zipa.train.pseudo_label` unlabelled audio -> shar labelled by a model (noisy student), resumable, by rank
- :mod:`zipa.data.text_stats`  inventory and coverage statistics of labelled text

``data_module.py`` at the repository root re-exports :mod:`zipa.data.module` for the icefall layout.
"""
