"""Settings of the one audio -> phones path that every front end shares, kept light to import
(`zipa --help` reads them without loading torch)."""

from __future__ import annotations

# How hypotheses are searched: "greedy" (as the released ZIPA inference) or "beam" (CTC prefix
# beam search / transducer modified beam search).
DECODING_METHODS = ("greedy", "beam")
