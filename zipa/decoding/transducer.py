"""Transducer search."""

from __future__ import annotations

from typing import List

import torch
from torch import Tensor


@torch.no_grad()
def transducer_greedy_search(model, encoder_out: Tensor, encoder_out_lens: Tensor) -> List[List[int]]:
    """Batched greedy search emitting at most one symbol per frame (icefall's
    `greedy_search_batch`).

    model: an AsrModel with `decoder` and `joiner`; encoder_out: (batch, T, C).
    """
    decoder, joiner = model.decoder, model.joiner
    blank_id, context_size = decoder.blank_id, decoder.context_size
    batch_size = encoder_out.shape[0]
    device = encoder_out.device
    lengths = encoder_out_lens.tolist()
    # Histories start with context_size - 1 "no token" slots (-1) and a blank.
    hyps = [[-1] * (context_size - 1) + [blank_id] for _ in range(batch_size)]
    context = torch.tensor(hyps, dtype=torch.int64, device=device)
    decoder_out = joiner.decoder_proj(decoder(context, need_pad=False))  # (batch, 1, joiner_dim)
    encoder_proj = joiner.encoder_proj(encoder_out)  # (batch, T, joiner_dim)

    for t in range(max(lengths)):
        active = [i for i, n in enumerate(lengths) if n > t]
        rows = torch.tensor(active, device=device)
        logits = joiner(encoder_proj[rows, t : t + 1], decoder_out[rows], project_input=False)
        best = logits.squeeze(1).argmax(dim=-1).tolist()
        emitted = [i for i, token in zip(active, best) if token != blank_id]
        if not emitted:
            continue
        for i, token in zip(active, best):
            if token != blank_id:
                hyps[i].append(token)
        context = torch.tensor([hyps[i][-context_size:] for i in emitted], dtype=torch.int64, device=device)
        decoder_out[emitted] = joiner.decoder_proj(decoder(context, need_pad=False))
    return [hyp[context_size:] for hyp in hyps]
