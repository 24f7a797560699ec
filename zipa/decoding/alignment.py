"""Frame alignment of a greedy hypothesis: which encoder frames each emitted token occupies.

A `TokenSpan` is counted in encoder output frames; `zipa.decoding.timestamps` turns frames into seconds.

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
same kind. The same functions align a given transcript (`zipa align --transcript`,
`zipa.inference.forced`).

`phone_forced_align` places phones on the frames of a frame classifier
(`zipa.model.aligner.FrameAligner`) rather than on CTC spikes: the same Viterbi pass, with the
blank standing for silence.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from zipa.decoding.ctc import BLANK_ID
from zipa.decoding.inventory import TokenMask, mask_logits
from zipa.model.protocols import TransducerHead


@dataclass(frozen=True)
class TokenSpan:
    """One emitted token: id, frames [start, end) of the encoder output, confidence in [0, 1];
    `alternatives`: top-k (token id, probability) pairs when asked for (`zipa.decoding.topk`)."""

    token: int
    start: int
    end: int
    confidence: float
    alternatives: tuple[tuple[int, float], ...] | None = None


def ctc_greedy_spans(log_probs: Tensor, lengths: Tensor, blank_id: int = BLANK_ID) -> list[list[TokenSpan]]:
    """Greedy CTC hypotheses with each token's run of frames and mean posterior.

    log_probs: (batch, T, vocab) log-softmax outputs; lengths: (batch,). The token ids are those
    of `ctc_greedy_search` on the same input.
    """
    best = log_probs.argmax(dim=-1)
    best_logp = log_probs.gather(-1, best.unsqueeze(-1)).squeeze(-1)
    best_ids = best.cpu().numpy()
    best_prob = best_logp.float().exp().cpu().numpy()
    out: list[list[TokenSpan]] = []
    for row, prob, length in zip(best_ids, best_prob, lengths.tolist()):
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


def transducer_spans(hyps: list[list[int]], frames: list[list[int]], probs: list[list[float]]) -> list[list[TokenSpan]]:
    """Spans of transducer tokens: each occupies the one frame it was emitted at."""
    return [
        [TokenSpan(int(t), int(f), int(f) + 1, float(p)) for t, f, p in zip(hyp, frame, prob)]
        for hyp, frame, prob in zip(hyps, frames, probs)
    ]


# ---------------------------------------------------------------------------------------------
# Forced alignment of a given hypothesis (e.g. from beam search, which keeps no frames)
# ---------------------------------------------------------------------------------------------


def ctc_min_frames(tokens: Sequence[int]) -> int:
    """Frames a CTC path spelling `tokens` needs: one per token, plus a blank between two equal
    tokens in a row (CTC merges repeats that no blank separates)."""
    return len(tokens) + sum(1 for a, b in zip(tokens, tokens[1:]) if a == b)


def ctc_viterbi(
    log_probs: Tensor,
    tokens: Sequence[int],
    blank_id: int = BLANK_ID,
    repeats_need_blank: bool = True,
    not_before: Sequence[int] | None = None,
) -> tuple[np.ndarray, float]:
    """The best CTC path that spells `tokens` (Viterbi over the CTC topology: blank, token 1,
    blank, token 2, ..., blank; a state repeats or moves on by one, or by two past an optional
    blank unless the two tokens around it are equal).

    ``repeats_need_blank=False``: the same pass for segment labels (`phone_forced_align`), where
    the blank is silence and two equal labels in a row may touch (two phones of the same class).
    ``not_before``: for each token, the first frame it may occupy (None: any).

    log_probs: (T, vocab) of one utterance (valid frames only; float64 is kept, anything else is
    read as float32). Returns (state per frame, the path's total log-probability): state
    ``2k + 1`` is token ``k``, even states are blanks. ValueError when the frames are too few
    (`ctc_min_frames`). Memory: one byte per frame and state (the back-pointers); the scores
    are kept for one frame at a time.
    """
    tokens = [int(t) for t in tokens]
    lp = _numpy(log_probs)
    num_frames, num_tokens = lp.shape[0], len(tokens)
    if num_tokens and blank_id in tokens:
        raise ValueError(f"ctc_viterbi: the blank id {blank_id} cannot be a token of the transcript")
    need = ctc_min_frames(tokens) if repeats_need_blank else num_tokens
    if num_frames < max(need, 1):
        why = "one per token and a blank between repeated tokens" if repeats_need_blank else "one per token"
        raise ValueError(
            f"ctc_viterbi: {num_tokens} tokens cannot be aligned to {num_frames} frames: "
            f"they need at least {need} ({why})"
        )
    labels = np.full(2 * num_tokens + 1, blank_id, dtype=np.int64)
    labels[1::2] = tokens
    num_states = len(labels)
    # A token state may be entered from two states back unless that is the same token.
    skip = np.zeros(num_states, dtype=bool)
    skip[3::2] = labels[3::2] != labels[1:-2:2] if repeats_need_blank else True
    neg_inf = -np.inf
    first = np.zeros(num_states, dtype=np.int64)  # the first frame each state may occupy
    if not_before is not None:
        first[1::2] = np.asarray(not_before, dtype=np.int64)

    def emit(t: int) -> np.ndarray:
        out = lp[t, labels]
        return out if not_before is None else np.where(first <= t, out, neg_inf)

    score = np.full(num_states, neg_inf)
    score[:2] = emit(0)[:2]
    back = np.zeros((num_frames, num_states), dtype=np.int8)  # 0: stay, 1: from s-1, 2: from s-2
    options = np.full((3, num_states), neg_inf)
    for t in range(1, num_frames):
        options[0] = score
        options[1, 1:] = score[:-1]
        options[2, 2:] = np.where(skip[2:], score[:-2], neg_inf)
        back[t] = options.argmax(axis=0)
        score = options.max(axis=0) + emit(t)
    last = num_states - 1 if num_states == 1 or score[-1] >= score[-2] else num_states - 2
    if not np.isfinite(score[last]):
        raise ValueError(f"ctc_viterbi: no path spelling the {num_tokens} tokens has a finite score")
    states = np.empty(num_frames, dtype=np.int64)
    s = last
    for t in range(num_frames - 1, -1, -1):
        states[t] = s
        s -= int(back[t, s])
    return states, float(score[last])


def _numpy(log_probs: Tensor) -> np.ndarray:
    """(T, vocab) log-probabilities as numpy: float64 stays float64, the rest becomes float32."""
    lp = log_probs.detach().cpu()
    return (lp if lp.dtype == torch.float64 else lp.float()).numpy()


def ctc_forced_align(
    log_probs: Tensor,
    tokens: list[int],
    blank_id: int = BLANK_ID,
    repeats_need_blank: bool = True,
    not_before: Sequence[int] | None = None,
) -> list[TokenSpan]:
    """The best CTC path that spells `tokens` (`ctc_viterbi`), as spans like `ctc_greedy_spans`:
    token ``k`` spans the frames the path spends in its state, and its confidence is its
    posterior probability averaged over those frames.

    log_probs: (T, vocab) of one utterance (valid frames only). For the greedy hypothesis this
    is the greedy path itself, so its spans are those of `ctc_greedy_spans`. ValueError when
    the transcript needs more frames than there are.
    """
    if len(tokens) == 0:
        return []
    states, _ = ctc_viterbi(log_probs, tokens, blank_id, repeats_need_blank, not_before)
    lp = _numpy(log_probs)
    # The path visits each token state in one run of frames, in order.
    is_token = states % 2 == 1
    starts = np.flatnonzero(is_token & np.concatenate(([True], states[1:] != states[:-1])))
    ends = np.flatnonzero(is_token & np.concatenate((states[1:] != states[:-1], [True]))) + 1
    return [
        TokenSpan(int(token), int(start), int(end), float(np.exp(lp[start:end, token]).mean()))
        for token, start, end in zip(tokens, starts, ends)
    ]


def phone_forced_align(
    log_probs: Tensor, classes: Sequence[int], silence: int = BLANK_ID, not_before: Sequence[int] | None = None
) -> list[TokenSpan]:
    """Where each phone sounds, from a frame classifier's log-probabilities
    (`zipa.model.aligner.FrameAligner`: per frame, the class of the phone sounding, ``silence``
    where none is): the best path through ``[silence] p1 [silence] p2 ... pN [silence]``, each
    phone at least one frame, each silence optional. That is CTC's topology with the blank as
    silence, except that two phones of the same class in a row may touch, so `ctc_viterbi`
    does it (``repeats_need_blank=False``; O(frames x phones), vectorised per frame).

    log_probs: (T, classes) of one utterance; ``not_before``: for each phone, the first frame it
    may start at (None: any). Returns one span per phone: its class, frames [start, end) and its
    posterior averaged over them. ValueError when T < len(classes), or when ``not_before``
    leaves no way through."""
    return ctc_forced_align(log_probs, list(classes), silence, repeats_need_blank=False, not_before=not_before)


@torch.no_grad()
def transducer_forced_align(
    model: TransducerHead,
    encoder_out: Tensor,
    tokens: list[int],
    frames_chunk: int = 64,
    token_mask: TokenMask | None = None,
) -> list[TokenSpan]:
    """The best way to emit `tokens`, at most one per frame, as `modified_beam_search` and
    `transducer_greedy_search` do (Viterbi over frames x tokens emitted so far).

    encoder_out: (T, C) of one utterance (valid frames only). Each token's span is the frame it
    is emitted at; its confidence the joiner's probability of it there (renormalised over
    `token_mask`, `zipa.decoding.inventory`, when one is given, as the masked searches do).
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
    blank_parts, token_parts = [], []
    for t0 in range(0, num_frames, frames_chunk):
        logits = joiner(
            encoder_proj[t0 : t0 + frames_chunk].unsqueeze(1), decoder_out.unsqueeze(0), project_input=False
        )
        lp = mask_logits(logits, token_mask).float().log_softmax(dim=-1)  # (chunk, U + 1, vocab)
        blank_parts.append(lp[:, :, blank_id].cpu())
        token_parts.append(lp[:, :-1].gather(2, next_token.view(1, -1, 1).expand(lp.shape[0], -1, 1)).squeeze(2).cpu())
    blank_lp = torch.cat(blank_parts).double().numpy()  # (T, U + 1): stay at u
    token_lp = torch.cat(token_parts).double().numpy()  # (T, U): emit token u + 1 after u tokens

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


def aligner_spans(
    log_probs: Tensor, tokens: Sequence[int], groups: Sequence[Sequence[int]], not_before: Sequence[int] | None = None
) -> list[TokenSpan]:
    """One span per token of ``tokens`` on a frame aligner's sub-frames (``log_probs``: (T,
    vocab) of one utterance): the phones, ``groups`` of token indices (a base token and the
    modifiers after it; word boundaries in none), placed by `phone_forced_align`, each token of
    a phone with the phone's frames and score; ``not_before``: per token, the first sub-frame
    its phone may start at (read on each phone's first token). A token in no group (a word
    boundary ``▁``, which has no time of its own) gets the first frame of the phone after it,
    or the last of the phone before it."""
    tokens = [int(t) for t in tokens]
    earliest = None if not_before is None else [int(not_before[g[0]]) for g in groups]
    phones = phone_forced_align(log_probs, [tokens[g[0]] for g in groups], not_before=earliest) if groups else []
    spans: list[TokenSpan | None] = [None] * len(tokens)
    for group, phone in zip(groups, phones):
        for k in group:
            spans[k] = TokenSpan(tokens[k], phone.start, phone.end, phone.confidence)
    after = None  # the frame of the next phone
    for k in range(len(tokens) - 1, -1, -1):
        span = spans[k]
        if span is not None:
            after = span.start
        else:
            before = next((s.end - 1 for s in reversed(spans[:k]) if s is not None), 0)
            frame = after if after is not None else before
            spans[k] = TokenSpan(tokens[k], frame, frame + 1, 0.0)
    return [span for span in spans if span is not None]
