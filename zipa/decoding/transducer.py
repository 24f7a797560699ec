"""Transducer search."""

from __future__ import annotations

from typing import List, Tuple, Union

import torch
from torch import Tensor


@torch.no_grad()
def transducer_greedy_search(
    model, encoder_out: Tensor, encoder_out_lens: Tensor, return_frames: bool = False
) -> Union[List[List[int]], Tuple[List[List[int]], List[List[int]], List[List[float]]]]:
    """Batched greedy search emitting at most one symbol per frame (icefall's
    `greedy_search_batch`).

    model: an AsrModel with `decoder` and `joiner`; encoder_out: (batch, T, C).
    With `return_frames`, returns `(hyps, frames, probs)`: for each token, the encoder frame it
    was emitted at and the joiner's probability of it there.
    """
    decoder, joiner = model.decoder, model.joiner
    blank_id, context_size = decoder.blank_id, decoder.context_size
    batch_size = encoder_out.shape[0]
    device = encoder_out.device
    lengths = encoder_out_lens.tolist()
    # Histories start with context_size - 1 "no token" slots (-1) and a blank.
    hyps = [[-1] * (context_size - 1) + [blank_id] for _ in range(batch_size)]
    frames: List[List[int]] = [[] for _ in range(batch_size)]
    probs: List[List[float]] = [[] for _ in range(batch_size)]
    context = torch.tensor(hyps, dtype=torch.int64, device=device)
    decoder_out = joiner.decoder_proj(decoder(context, need_pad=False))  # (batch, 1, joiner_dim)
    encoder_proj = joiner.encoder_proj(encoder_out)  # (batch, T, joiner_dim)

    for t in range(max(lengths)):
        active = [i for i, n in enumerate(lengths) if n > t]
        rows = torch.tensor(active, device=device)
        logits = joiner(encoder_proj[rows, t : t + 1], decoder_out[rows], project_input=False).squeeze(1)
        best = logits.argmax(dim=-1).tolist()
        emitted = [i for i, token in zip(active, best) if token != blank_id]
        if not emitted:
            continue
        if return_frames:
            best_probs = logits.float().softmax(dim=-1).max(dim=-1).values.tolist()
        for k, (i, token) in enumerate(zip(active, best)):
            if token != blank_id:
                hyps[i].append(token)
                if return_frames:
                    frames[i].append(t)
                    probs[i].append(best_probs[k])
        context = torch.tensor([hyps[i][-context_size:] for i in emitted], dtype=torch.int64, device=device)
        decoder_out[emitted] = joiner.decoder_proj(decoder(context, need_pad=False))
    hyps = [hyp[context_size:] for hyp in hyps]
    return (hyps, frames, probs) if return_frames else hyps
