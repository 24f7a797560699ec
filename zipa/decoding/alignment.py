"""Frame alignment of a greedy hypothesis: which encoder frames each emitted token occupies.

A `TokenSpan` is counted in encoder output frames; `zipa.inference.timestamps` turns frames into seconds.

- CTC (`ctc_greedy_spans`): the best path is the frame-wise argmax (exactly as
  `ctc_greedy_search`). A *run* is a maximal stretch of consecutive frames with the same argmax;
  every non-blank run emits one token. Its span is ``[first frame of the run, last frame + 1)``
  and its confidence is the token's posterior probability averaged over the run. Blank runs
  emit nothing, so spans need not touch (CTC posteriors are peaky: a phone often occupies one or
  two frames, with blank between phones).
- Transducer: a token is emitted at one frame (`transducer_greedy_search(return_frames=True)`);
  its span is that one frame and its confidence the joiner's probability of it there.

Beam searches keep no frames (they sum over alignments); `ctc_forced_align` and
`transducer_forced_align` give the best alignment of their hypothesis (Viterbi), as spans of the
same kind.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List

import numpy as np
import torch
from torch import Tensor

from zipa.decoding.ctc import BLANK_ID
from zipa.model.protocols import TransducerHead


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



# ---------------------------------------------------------------------------------------------
# Forced alignment of a given hypothesis (e.g. from beam search, which keeps no frames)
# ---------------------------------------------------------------------------------------------


def ctc_forced_align(log_probs: Tensor, tokens: List[int], blank_id: int = BLANK_ID) -> List[TokenSpan]:
    """The best CTC path that spells `tokens` (Viterbi), as spans like `ctc_greedy_spans`.

    log_probs: (T, vocab) of one utterance (valid frames only). For the greedy hypothesis this
    is the greedy path itself, so its spans are those of `ctc_greedy_spans`.
    """
    lp = log_probs.detach().float().cpu().numpy()
    num_frames, num_tokens = lp.shape[0], len(tokens)
    if num_tokens == 0:
        return []
    labels = np.full(2 * num_tokens + 1, blank_id, dtype=np.int64)
    labels[1::2] = tokens
    num_states = len(labels)
    emit = lp[:, labels]  # (T, S)
    # A token state may be entered from two states back unless that is the same token.
    skip = np.zeros(num_states, dtype=bool)
    skip[3::2] = labels[3::2] != labels[1:-2:2]
    neg_inf = -np.inf
    score = np.full(num_states, neg_inf)
    score[:2] = emit[0, :2]
    back = np.zeros((num_frames, num_states), dtype=np.int8)  # 0: stay, 1: from s-1, 2: from s-2
    for t in range(1, num_frames):
        from1 = np.concatenate(([neg_inf], score[:-1]))
        from2 = np.where(skip, np.concatenate(([neg_inf, neg_inf], score[:-2])), neg_inf)
        options = np.stack([score, from1, from2])
        back[t] = options.argmax(axis=0)
        score = options.max(axis=0) + emit[t]
    last = num_states - 1 if score[-1] >= score[-2] else num_states - 2
    if not np.isfinite(score[last]):
        raise ValueError(f"ctc_forced_align: {num_tokens} tokens cannot be aligned to {num_frames} frames")
    states = np.empty(num_frames, dtype=np.int64)
    s = last
    for t in range(num_frames - 1, -1, -1):
        states[t] = s
        s -= int(back[t, s])
    spans = []
    for k, token in enumerate(tokens):
        frames = np.flatnonzero(states == 2 * k + 1)
        start, end = int(frames[0]), int(frames[-1]) + 1
        spans.append(TokenSpan(int(token), start, end, float(np.exp(lp[start:end, token]).mean())))
    return spans


@torch.no_grad()
def transducer_forced_align(
    model: TransducerHead, encoder_out: Tensor, tokens: List[int], frames_chunk: int = 64
) -> List[TokenSpan]:
    """The best way to emit `tokens`, at most one per frame, as `modified_beam_search` and
    `transducer_greedy_search` do (Viterbi over frames x tokens emitted so far).

    encoder_out: (T, C) of one utterance (valid frames only). Each token's span is the frame it
    is emitted at; its confidence the joiner's probability of it there.
    """
    decoder, joiner = model.decoder, model.joiner
    blank_id, context_size = decoder.blank_id, decoder.context_size
    num_frames, num_tokens = encoder_out.shape[0], len(tokens)
    if num_tokens == 0:
        return []
    if num_tokens > num_frames:
        raise ValueError(f"transducer_forced_align: {num_tokens} tokens cannot be emitted in {num_frames} frames")
    device = encoder_out.device
    history = [-1] * (context_size - 1) + [blank_id] + list(tokens)
    contexts = torch.tensor([history[u : u + context_size] for u in range(num_tokens + 1)], device=device)
    decoder_out = joiner.decoder_proj(decoder(contexts, need_pad=False)).squeeze(1)  # (U + 1, J)
    encoder_proj = joiner.encoder_proj(encoder_out)  # (T, J)
    next_token = torch.tensor(list(tokens), device=device)
    blank_lp, token_lp = [], []
    for t0 in range(0, num_frames, frames_chunk):
        logits = joiner(encoder_proj[t0 : t0 + frames_chunk].unsqueeze(1), decoder_out.unsqueeze(0), project_input=False)
        lp = logits.float().log_softmax(dim=-1)  # (chunk, U + 1, vocab)
        blank_lp.append(lp[:, :, blank_id].cpu())
        token_lp.append(lp[:, :-1].gather(2, next_token.view(1, -1, 1).expand(lp.shape[0], -1, 1)).squeeze(2).cpu())
    blank_lp = torch.cat(blank_lp).double().numpy()  # (T, U + 1): stay at u
    token_lp = torch.cat(token_lp).double().numpy()  # (T, U): emit token u + 1 after u tokens

    score = np.full(num_tokens + 1, -np.inf)
    score[0] = 0.0
    emitted = np.zeros((num_frames, num_tokens + 1), dtype=bool)  # reached (t + 1, u) by emitting
    for t in range(num_frames):
        stay = score + blank_lp[t]
        move = np.concatenate(([-np.inf], score[:-1] + token_lp[t]))
        emitted[t] = move > stay
        score = np.maximum(stay, move)
    if not np.isfinite(score[-1]):
        raise ValueError("transducer_forced_align: no alignment with a finite score")
    spans, u = [], num_tokens
    for t in range(num_frames - 1, -1, -1):
        if u > 0 and emitted[t, u]:
            u -= 1
            spans.append(TokenSpan(int(tokens[u]), t, t + 1, float(np.exp(token_lp[t, u]))))
    return spans[::-1]
