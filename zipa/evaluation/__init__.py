"""Scoring: PER and PFER (:mod:`zipa.evaluation.metrics`), icefall's result files (``recogs-*``,
``errs-*``, metrics JSON; :mod:`zipa.evaluation.icefall_files`) and decoding whole test sets
(:mod:`zipa.evaluation.test_sets`)."""
