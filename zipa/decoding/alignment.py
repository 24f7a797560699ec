"""Frame alignment of a greedy hypothesis: which encoder frames each emitted token occupies.

A `TokenSpan` is counted in encoder output frames; `zipa.timestamps` turns frames into seconds.

- CTC (`ctc_greedy_spans`): the best path is the frame-wise argmax (exactly as
  `ctc_greedy_search`). A *run* is a maximal stretch of consecutive frames with the same argmax;
  every non-blank run emits one token. Its span is ``[first frame of the run, last frame + 1)``
  and its confidence is the token's posterior probability averaged over the run. Blank runs
  emit nothing, so spans need not touch (CTC posteriors are peaky: a phone often occupies one or
  two frames, with blank between phones).
- Transducer: a token is emitted at one frame (`transducer_greedy_search(return_frames=True)`);
  its span is that one frame and its confidence the joiner's probability of it there.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List

import numpy as np
from torch import Tensor

from zipa.decoding.ctc import BLANK_ID


@dataclass(frozen=True)
class TokenSpan:
    """One emitted token: id, frames [start, end) of the encoder output, confidence in [0, 1]."""

    token: int
    start: int
    end: int
    confidence: float


def ctc_greedy_spans(log_probs: Tensor, lengths: Tensor, blank_id: int = BLANK_ID) -> List[List[TokenSpan]]:
    """Greedy CTC hypotheses with each token's run of frames and mean posterior.

    log_probs: (batch, T, vocab) log-softmax outputs; lengths: (batch,). The token ids are those
    of `ctc_greedy_search` on the same input.
    """
    best = log_probs.argmax(dim=-1)
    best_logp = log_probs.gather(-1, best.unsqueeze(-1)).squeeze(-1)
    best = best.cpu().numpy()
    best_prob = best_logp.float().exp().cpu().numpy()
    out = []
    for row, prob, length in zip(best, best_prob, lengths.tolist()):
        row, prob = row[:length], prob[:length]
        if length == 0:
            out.append([])
            continue
        starts = np.flatnonzero(np.concatenate(([True], row[1:] != row[:-1])))
        ends = np.append(starts[1:], length)
        spans = [
            TokenSpan(int(row[s]), int(s), int(e), float(prob[s:e].mean()))
            for s, e in zip(starts, ends)
            if row[s] != blank_id
        ]
        out.append(spans)
    return out


def transducer_spans(hyps: List[List[int]], frames: List[List[int]], probs: List[List[float]]) -> List[List[TokenSpan]]:
    """Spans of transducer tokens: each occupies the one frame it was emitted at."""
    return [
        [TokenSpan(int(t), int(f), int(f) + 1, float(p)) for t, f, p in zip(hyp, frame, prob)]
        for hyp, frame, prob in zip(hyps, frames, probs)
    ]

