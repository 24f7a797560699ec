"""Search over model outputs: CTC and transducer heads -> token ids (and frame indices).

The searches are imported on first use, so that the light modules of this package
(`zipa.decoding.timestamps`) can be read without loading torch."""

from __future__ import annotations

import importlib
from typing import Any

_SEARCHES = {
    "ctc_greedy_search": "zipa.decoding.ctc",
    "ctc_prefix_beam_search": "zipa.decoding.ctc",
    "modified_beam_search": "zipa.decoding.transducer",
    "transducer_greedy_search": "zipa.decoding.transducer",
}
__all__ = sorted(_SEARCHES)


def __getattr__(name: str) -> Any:
    if name in _SEARCHES:
        return getattr(importlib.import_module(_SEARCHES[name]), name)
    raise AttributeError(f"module 'zipa.decoding' has no attribute {name!r}")
