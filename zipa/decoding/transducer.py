"""Transducer search: greedy and modified beam search (at most one symbol per frame)."""

from __future__ import annotations

import torch
from torch import Tensor

from zipa.decoding.inventory import TokenMask, mask_logits
from zipa.decoding.prefix_trie import ROOT, PrefixTrie
from zipa.model.protocols import TransducerHead


@torch.no_grad()
def transducer_greedy_search(
    model: TransducerHead,
    encoder_out: Tensor,
    encoder_out_lens: Tensor,
    return_frames: bool = False,
    token_mask: TokenMask | None = None,
) -> list[list[int]] | tuple[list[list[int]], list[list[int]], list[list[float]]]:
    """Batched greedy search emitting at most one symbol per frame (icefall's
    `greedy_search_batch`).

    model: its `decoder` and `joiner` (`zipa.model.protocols.TransducerHead`); encoder_out: (batch, T, C).
    With `return_frames`, returns `(hyps, frames, probs)`: for each token, the encoder frame it
    was emitted at and the joiner's probability of it there. `token_mask`
    (`zipa.decoding.inventory.token_mask`): tokens outside it get -inf logits, so they are never
    emitted and the probabilities are renormalised over the allowed tokens.
    """
    decoder, joiner = model.decoder, model.joiner
    blank_id, context_size = decoder.blank_id, decoder.context_size
    batch_size = encoder_out.shape[0]
    device = encoder_out.device
    lengths = encoder_out_lens.tolist()
    # Histories start with context_size - 1 "no token" slots (-1) and a blank.
    hyps = [[-1] * (context_size - 1) + [blank_id] for _ in range(batch_size)]
    frames: list[list[int]] = [[] for _ in range(batch_size)]
    probs: list[list[float]] = [[] for _ in range(batch_size)]
    context = torch.tensor(hyps, dtype=torch.int64, device=device)
    decoder_out = joiner.decoder_proj(decoder(context, need_pad=False))  # (batch, 1, joiner_dim)
    encoder_proj = joiner.encoder_proj(encoder_out)  # (batch, T, joiner_dim)

    for t in range(max(lengths)):
        active = [i for i, n in enumerate(lengths) if n > t]
        rows = torch.tensor(active, device=device)
        logits = joiner(encoder_proj[rows, t : t + 1], decoder_out[rows], project_input=False).squeeze(1)
        logits = mask_logits(logits, token_mask)
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


@torch.no_grad()
def modified_beam_search(
    model: TransducerHead,
    encoder_out: Tensor,
    encoder_out_lens: Tensor,
    beam: int = 4,
    length_norm: bool = True,
    token_mask: TokenMask | None = None,
) -> list[list[int]]:
    """icefall's `modified_beam_search`: beam search emitting at most one symbol per frame.

    At each frame every hypothesis is scored against every token (blank keeps it as it is, any
    other token appends it); the `beam` best (hypothesis, token) pairs of each utterance survive,
    and pairs that spell the same token sequence (e.g. "a"+blank and ""+"a") are merged by
    log-adding their scores, so a hypothesis' score sums over its alignments. As in icefall, the
    merge comes after the top-k, and the winner maximises score / (context_size + its length)
    (`length_norm`; pass False for the plain total log-probability).

    model: its `decoder` and `joiner` (`zipa.model.protocols.TransducerHead`); encoder_out:
    (batch, T, C); encoder_out_lens: (batch,).

    Batched: hypotheses are (batch, beam) slots of tensors; one decoder and one joiner call per
    frame cover every live hypothesis of every unfinished utterance. Sequences are `PrefixTrie`
    ids, so merging compares integers. With beam=1 this is `transducer_greedy_search`.
    `token_mask`: as in `transducer_greedy_search` (the log-softmax renormalises over it).
    """
    decoder, joiner = model.decoder, model.joiner
    blank_id, context_size = decoder.blank_id, decoder.context_size
    batch_size = encoder_out.shape[0]
    device = encoder_out.device
    lengths = encoder_out_lens.to(device)
    neg_inf = float("-inf")
    trie = PrefixTrie()

    # Per slot: total log-prob, trie id, decoder context (the last context_size tokens, starting
    # as context_size - 1 "no token" slots (-1) and a blank) and number of tokens. Only slot 0
    # (the empty hypothesis) starts alive.
    scores = torch.full((batch_size, beam), neg_inf, device=device)
    scores[:, 0] = 0.0
    nodes = torch.full((batch_size, beam), ROOT, dtype=torch.int64, device=device)
    start = torch.tensor([-1] * (context_size - 1) + [blank_id], dtype=torch.int64, device=device)
    contexts = start.expand(batch_size, beam, context_size).clone()
    num_tokens = torch.zeros((batch_size, beam), dtype=torch.int64, device=device)
    encoder_proj = joiner.encoder_proj(encoder_out)  # (batch, T, joiner_dim)
    earlier = torch.ones(beam, beam, dtype=torch.bool, device=device).tril(diagonal=-1)

    for t in range(int(lengths.max()) if batch_size else 0):
        active = (lengths > t).unsqueeze(1)  # finished utterances keep their beam
        rows = ((scores > neg_inf) & active).flatten().nonzero().squeeze(1)
        decoder_out = joiner.decoder_proj(decoder(contexts.flatten(0, 1)[rows], need_pad=False))
        logits = joiner(encoder_proj[rows // beam, t].unsqueeze(1), decoder_out, project_input=False)
        log_probs = mask_logits(logits.squeeze(1), token_mask).float().log_softmax(dim=-1)  # (live hyps, vocab)
        vocab_size = log_probs.shape[-1]
        candidates = torch.full((batch_size * beam, vocab_size), neg_inf, device=device)
        candidates[rows] = log_probs + scores.flatten()[rows].unsqueeze(1)

        top, idx = candidates.view(batch_size, beam * vocab_size).topk(beam, dim=1)
        src, token = idx // vocab_size, idx % vocab_size
        emit = token != blank_id
        new_nodes = nodes.gather(1, src)
        grown = (emit & (top > neg_inf)).nonzero(as_tuple=True)
        if grown[0].numel():
            ids = trie.extend(new_nodes[grown].tolist(), token[grown].tolist())
            new_nodes[grown] = torch.tensor(ids, dtype=torch.int64, device=device)

        # Merge pairs spelling the same sequence into the first of them.
        finite = top > neg_inf
        same = (new_nodes.unsqueeze(2) == new_nodes.unsqueeze(1)) & finite.unsqueeze(2) & finite.unsqueeze(1)
        merged = top.unsqueeze(1).expand(-1, beam, -1).masked_fill(~same, neg_inf).logsumexp(dim=2)
        new_scores = merged.masked_fill((same & earlier).any(dim=2), neg_inf)

        src_contexts = contexts.gather(1, src.unsqueeze(2).expand(-1, -1, context_size))
        shifted = torch.cat([src_contexts[:, :, 1:], token.unsqueeze(2)], dim=2)
        new_contexts = torch.where(emit.unsqueeze(2), shifted, src_contexts)
        new_num_tokens = num_tokens.gather(1, src) + emit

        scores = torch.where(active, new_scores, scores)
        nodes = torch.where(active, new_nodes, nodes)
        contexts = torch.where(active.unsqueeze(2), new_contexts, contexts)
        num_tokens = torch.where(active, new_num_tokens, num_tokens)

    final = scores / (num_tokens + context_size) if length_norm else scores
    best = final.argmax(dim=1).tolist()
    node_ids = nodes.tolist()
    return [trie.sequence(node_ids[i][best[i]]) for i in range(batch_size)]
