"""CTC search: greedy (best path) and prefix beam search (best label sequence)."""

from __future__ import annotations

import torch
from torch import Tensor

from zipa.decoding.prefix_trie import ROOT, PrefixTrie

BLANK_ID = 0


def ctc_greedy_search(
    log_probs: Tensor, lengths: Tensor, blank_id: int = BLANK_ID, return_frames: bool = False
) -> list[list[int]] | tuple[list[list[int]], list[list[int]]]:
    """Best path: argmax per frame, repeats collapsed, blanks dropped.

    log_probs: (batch, T, vocab); lengths: (batch,). With `return_frames`, also returns for
    each token the frame where its run starts.
    """
    best = log_probs.argmax(dim=-1).cpu()
    hyps, frames = [], []
    for row, length in zip(best, lengths.tolist()):
        row = row[:length]
        # A token is emitted where the argmax changes and is not blank.
        starts = torch.ones_like(row, dtype=torch.bool)
        starts[1:] = row[1:] != row[:-1]
        keep = starts & (row != blank_id)
        hyps.append(row[keep].tolist())
        frames.append(torch.nonzero(keep).flatten().tolist())
    return (hyps, frames) if return_frames else hyps


@torch.no_grad()
def ctc_prefix_beam_search(
    log_probs: Tensor,
    lengths: Tensor,
    beam: int = 4,
    blank_id: int = BLANK_ID,
    tokens_per_frame: int | None = None,
) -> list[list[int]]:
    """CTC prefix beam search: the most probable label sequence, summing over its alignments.

    Greedy search returns the labels of the single best *path*; a label sequence's probability is
    the sum over all paths that collapse to it, and the two can disagree (e.g. three frames of
    P(blank)=0.4, P(a)=0.35: greedy says "", yet P("a")=0.31 > P("")=0.06). The prefix search
    keeps the `beam` most probable prefixes and, for each, the log-probability of its paths that
    end in blank (`pb`) and in its last token (`pnb`); the split is needed because a repeated
    token extends a prefix only after a blank (a,a -> "a" but a,-,a -> "aa").

    log_probs: (batch, T, vocab) log-softmax outputs; lengths: (batch,). `tokens_per_frame`
    (default: `beam`, as icefall's `ctc_prefix_beam_search`) keeps only the most probable tokens
    of each frame; pass the vocabulary size to keep all. Returns the best prefix per utterance.

    Vectorised over batch x beam x vocab with a loop over frames. Prefixes are ids in a
    `PrefixTrie`, so "prefix p extended by token c is prefix q already in the beam" is the
    integer test `node[p] == parent[q] and c == last[q]`.
    """
    log_probs = log_probs.detach().float().cpu()
    lengths = lengths.cpu()
    batch, num_frames, vocab = log_probs.shape
    tokens_per_frame = min(vocab, tokens_per_frame or beam)
    neg_inf = float("-inf")
    tokens = torch.arange(vocab)
    trie = PrefixTrie()

    # Per beam slot: the two log-probabilities, the prefix's trie id, its parent's id and its
    # last token (-1 for the empty prefix). Only slot 0 (the empty prefix) starts alive.
    pb = torch.full((batch, beam), neg_inf)
    pb[:, 0] = 0.0
    pnb = torch.full((batch, beam), neg_inf)
    node = torch.full((batch, beam), ROOT, dtype=torch.int64)
    parent = torch.full((batch, beam), -1, dtype=torch.int64)
    last = torch.full((batch, beam), -1, dtype=torch.int64)

    for t in range(int(lengths.max()) if batch else 0):
        active = (lengths > t).unsqueeze(1)  # finished utterances keep their beam
        lp = log_probs[:, t]
        if tokens_per_frame < vocab:
            top, top_idx = lp.topk(tokens_per_frame, dim=-1)
            lp = torch.full_like(lp, neg_inf).scatter_(-1, top_idx, top)
        total = torch.logaddexp(pb, pnb)
        alive = total > neg_inf

        # Staying on the same prefix: a blank, or a repeat of its last token merging into it.
        stay_pb = total + lp[:, blank_id].unsqueeze(1)
        repeat = lp.gather(1, last.clamp(min=0)).masked_fill(last < 0, neg_inf)
        stay_pnb = pnb + repeat

        # Extending prefix p by token c: from all its paths, except that a repeat of its last
        # token must follow a blank.
        from_score = torch.where(last.unsqueeze(2) == tokens, pb.unsqueeze(2), total.unsqueeze(2))
        ext = from_score + lp.unsqueeze(1)  # (batch, p, c)
        ext[:, :, blank_id] = neg_inf

        # An extension that spells prefix q already in the beam adds to q's pnb instead.
        match = (node.unsqueeze(2) == parent.unsqueeze(1)) & alive.unsqueeze(2) & alive.unsqueeze(1)
        last_q = last.clamp(min=0).unsqueeze(1).expand(batch, beam, beam)  # [n, p, q] = last[q]
        into_q = ext.gather(2, last_q).masked_fill(~match, neg_inf)
        stay_pnb = torch.logaddexp(stay_pnb, into_q.logsumexp(dim=1))
        merged = torch.zeros_like(ext).scatter_add_(2, last_q, match.float()) > 0
        ext = ext.masked_fill(merged, neg_inf)

        # Keep the best `beam` of the stays and the (now all new) extensions.
        candidates = torch.cat([torch.logaddexp(stay_pb, stay_pnb), ext.flatten(1)], dim=1)
        scores, idx = candidates.topk(beam, dim=1)
        is_ext = idx >= beam
        src = torch.where(is_ext, (idx - beam) // vocab, idx)
        token = (idx - beam) % vocab
        new_pb = torch.where(is_ext, neg_inf, stay_pb.gather(1, src))
        new_pnb = torch.where(is_ext, scores, stay_pnb.gather(1, src))
        src_node = node.gather(1, src)
        new_node = src_node.clone()
        new_parent = torch.where(is_ext, src_node, parent.gather(1, src))
        new_last = torch.where(is_ext, token, last.gather(1, src))
        grown = (is_ext & (scores > neg_inf) & active).nonzero(as_tuple=True)
        if grown[0].numel():
            ids = trie.extend(src_node[grown].tolist(), token[grown].tolist())
            new_node[grown] = torch.tensor(ids, dtype=torch.int64)

        pb = torch.where(active, new_pb, pb)
        pnb = torch.where(active, new_pnb, pnb)
        node = torch.where(active, new_node, node)
        parent = torch.where(active, new_parent, parent)
        last = torch.where(active, new_last, last)

    best = torch.logaddexp(pb, pnb).argmax(dim=1)
    return [trie.sequence(int(node[i, best[i]])) for i in range(batch)]
