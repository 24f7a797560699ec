"""Top-k alternatives of emitted phones: the K most probable tokens where a phone was emitted.

- CTC (`ctc_alternatives`): the frame posteriors averaged over the phone's frames, blank's
  share removed and the rest renormalised to sum to 1 (so the probabilities answer "which token,
  given that one is emitted here"; the word boundary ``▁`` is a token like the others).
- Transducer (`transducer_alternatives`): the joiner's distribution at the frame and decoder
  state where the token was emitted, renormalised the same way over non-blank tokens.

Both take the distributions the search used: with an inventory mask (`zipa.decoding.inventory`)
tokens outside it have probability 0 and are never alternatives. Alternatives are
``(token id, probability)`` pairs, most probable first, at most K, none of probability 0.
Computed in float64.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from zipa.decoding.inventory import TokenMask, mask_logits
from zipa.model.protocols import TransducerHead

Alternatives = tuple[tuple[int, float], ...]


def top_alternatives(probs: Tensor, k: int, blank_id: int = 0) -> Alternatives:
    """The `k` most probable non-blank tokens of a distribution (vocab,), renormalised over the
    non-blank tokens; tokens of probability 0 are left out."""
    p = probs.detach().double().cpu().clone()
    p[blank_id] = 0.0
    total = float(p.sum())
    if not total > 0:
        return ()
    p /= total
    values, ids = p.topk(min(k, p.numel()))
    return tuple((int(i), float(v)) for v, i in zip(values.tolist(), ids.tolist()) if v > 0)


def ctc_alternatives(
    log_probs: Tensor, frames: Sequence[tuple[int, int]], k: int, blank_id: int = 0
) -> list[Alternatives]:
    """For each frame range [start, end) of one utterance's CTC log-probs (T, vocab): the top-k
    tokens of the posteriors averaged over those frames (see the module docstring)."""
    probs = log_probs.detach().double().exp()
    return [top_alternatives(probs[start:end].mean(dim=0), k, blank_id) for start, end in frames]


@torch.no_grad()
def transducer_alternatives(
    model: TransducerHead,
    encoder_out: Tensor,
    tokens: Sequence[int],
    frames: Sequence[int],
    which: Sequence[int],
    k: int,
    token_mask: TokenMask | None = None,
) -> list[Alternatives]:
    """Top-k tokens of the joiner's distribution where token ``tokens[u]`` was emitted, for each
    u in `which`: at encoder frame ``frames[u]``, with the decoder fed the tokens before it.

    encoder_out: (T, C) of one utterance, as `zipa.decoding.alignment.transducer_forced_align`
    takes it; `tokens`, `frames`: a hypothesis and its emission frames (greedy search's, or a
    forced alignment's).
    """
    if not which:
        return []
    decoder, joiner = model.decoder, model.joiner
    blank_id, context_size = decoder.blank_id, decoder.context_size
    device = encoder_out.device
    history = [-1] * (context_size - 1) + [blank_id] + list(tokens)
    contexts = torch.tensor([history[u : u + context_size] for u in which], dtype=torch.int64, device=device)
    decoder_out = joiner.decoder_proj(decoder(contexts, need_pad=False))  # (N, 1, J)
    at = torch.tensor([frames[u] for u in which], dtype=torch.int64, device=device)
    encoder_proj = joiner.encoder_proj(encoder_out[at]).unsqueeze(1)  # (N, 1, J)
    logits = mask_logits(joiner(encoder_proj, decoder_out, project_input=False).squeeze(1), token_mask)
    probs = logits.double().softmax(dim=-1)
    return [top_alternatives(row, k, blank_id) for row in probs]
