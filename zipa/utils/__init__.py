"""Foundations every layer may use: the one atomic writer (:mod:`zipa.utils.atomic`), TSV
readers whose errors name the file and line (:mod:`zipa.utils.tsv`), flag parsing
(:mod:`zipa.utils.flags`)."""
