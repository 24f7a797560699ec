"""Search over model outputs: CTC and transducer heads -> token ids (and frame indices)."""

from zipa.decoding.ctc import ctc_greedy_search, ctc_prefix_beam_search
from zipa.decoding.transducer import modified_beam_search, transducer_greedy_search

__all__ = ["ctc_greedy_search", "ctc_prefix_beam_search", "modified_beam_search", "transducer_greedy_search"]
