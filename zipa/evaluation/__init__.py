"""Scoring: PER and PFER (:mod:`zipa.evaluation.metrics`), icefall's result files (``recogs-*``,
``errs-*``, metrics JSON; :mod:`zipa.evaluation.icefall_files`), decoding whole test sets
(:mod:`zipa.train.test_sets`), scoring audio against references for ``zipa evaluate`` and
``model.evaluate`` (:mod:`zipa.evaluation.evaluate`, references read by
:mod:`zipa.evaluation.references`) and their PER/PFER bar charts (:mod:`zipa.evaluation.charts`)."""
