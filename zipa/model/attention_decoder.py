"""Attention-decoder head: a Transformer decoder over the encoder output, trained with a
label-smoothed cross entropy and usable for n-best rescoring.

Attribute names, and so state_dict keys, are icefall's (`attention_decoder.decoder.embed`,
`...layers.N.self_attn.linear_q`, `...feed_forward.0`, `...output_layer`, ...). Token sequences
are plain: a list of id lists, or a padded (batch, U) / concatenated (sum(U),) tensor with
lengths; no k2 needed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from zipa.model.scaling import penalize_abs_values_gt

TokenIds = Union[Sequence[Sequence[int]], Tensor]


def _pad_mask(lengths: Tensor, max_len: int) -> Tensor:
    """(batch, max_len) bool, True at padded positions."""
    return torch.arange(max_len, device=lengths.device).unsqueeze(0) >= lengths.unsqueeze(1)


def _as_padded(ys: TokenIds, ys_lens: Tensor | None, device: torch.device) -> tuple[Tensor, Tensor]:
    """Token ids as a (batch, U) int64 tensor (padding arbitrary) and (batch,) lengths."""
    if not isinstance(ys, Tensor):
        rows = ys.tolist() if hasattr(ys, "tolist") else ys  # e.g. a k2.RaggedTensor
        lens = torch.tensor([len(r) for r in rows], dtype=torch.int64, device=device)
        padded = torch.zeros(len(rows), max([len(r) for r in rows], default=0), dtype=torch.int64)
        for i, row in enumerate(rows):
            padded[i, : len(row)] = torch.as_tensor(list(row), dtype=torch.int64)
        return padded.to(device), lens
    if ys_lens is None:
        raise ValueError("a tensor of token ids needs ys_lens")
    lens = ys_lens.to(device=device, dtype=torch.int64)
    ys = ys.to(device=device, dtype=torch.int64)
    if ys.ndim == 1:  # concatenated, as for CTC
        width = int(lens.max()) if lens.numel() else 0
        padded = torch.zeros(lens.numel(), width, dtype=torch.int64, device=device)
        padded[~_pad_mask(lens, padded.shape[1])] = ys[: int(lens.sum())]
        return padded, lens
    if ys.ndim != 2:
        raise ValueError(f"token ids must be 1-D (concatenated) or 2-D (padded), got {tuple(ys.shape)}")
    return ys, lens


class LabelSmoothingLoss(nn.Module):
    """Cross entropy against (1 - s) * one_hot(target) + s / num_classes; positions whose target
    is `ignore_index` count zero. reduction: "sum" (unnormalised), "mean" (per counted position)
    or "none" (one value per position)."""

    def __init__(self, ignore_index: int = -1, label_smoothing: float = 0.1, reduction: str = "sum"):
        super().__init__()
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        if reduction not in ("none", "sum", "mean"):
            raise ValueError(f"unknown reduction {reduction!r}")
        self.ignore_index = ignore_index
        self.label_smoothing = label_smoothing
        self.reduction = reduction

    def forward(self, x: Tensor, target: Tensor) -> Tensor:
        """x: (batch, U, num_classes) logits; target: (batch, U) ids."""
        assert x.ndim == 3 and x.shape[:2] == target.shape, (x.shape, target.shape)
        log_probs = x.reshape(-1, x.shape[-1]).log_softmax(dim=-1)
        target = target.reshape(-1)
        ignored = target == self.ignore_index
        picked = log_probs.gather(1, target.masked_fill(ignored, 0).unsqueeze(1)).squeeze(1)
        s = self.label_smoothing
        loss = -(1.0 - s) * picked - s * log_probs.mean(dim=-1)
        loss = loss.masked_fill(ignored, 0.0)
        if self.reduction == "sum":
            return loss.sum()
        if self.reduction == "mean":
            return loss.sum() / (~ignored).sum()
        return loss


class MultiHeadAttention(nn.Module):
    """Scaled dot-product attention with separate q/k/v projections; keys and values may come
    from a memory of another width (`memory_dim`). Masks are True where attention is barred."""

    def __init__(
        self, embed_dim: int, attention_dim: int, num_heads: int, memory_dim: int | None = None, dropout: float = 0.0
    ):
        super().__init__()
        if attention_dim % num_heads:
            raise ValueError(f"attention_dim {attention_dim} is not a multiple of num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = attention_dim // num_heads
        self.dropout = dropout
        kv_dim = embed_dim if memory_dim is None else memory_dim
        self.linear_q = nn.Linear(embed_dim, attention_dim)
        self.linear_k = nn.Linear(kv_dim, attention_dim)
        self.linear_v = nn.Linear(kv_dim, attention_dim)
        self.out_proj = nn.Linear(attention_dim, embed_dim)

    def forward(self, query: Tensor, key: Tensor, value: Tensor, attn_mask: Tensor | None = None) -> Tensor:
        """query (batch, T, embed_dim); key, value (batch, S, kv_dim);
        attn_mask (batch, 1 or T, S). Returns (batch, T, embed_dim)."""
        batch, tgt_len, _ = query.shape
        src_len = key.shape[1]
        heads, head_dim = self.num_heads, self.head_dim
        q = self.linear_q(query).reshape(batch, tgt_len, heads, head_dim).transpose(1, 2)
        k = self.linear_k(key).reshape(batch, src_len, heads, head_dim).permute(0, 2, 3, 1)
        v = self.linear_v(value).reshape(batch, src_len, heads, head_dim).transpose(1, 2)

        scores = torch.matmul(q, k) / math.sqrt(head_dim)  # (batch, heads, T, S)
        # Identity forward; in backward, discourages scores beyond +-50.
        scores = penalize_abs_values_gt(scores, limit=50.0, penalty=1.0e-4)
        if attn_mask is not None:
            scores = scores.masked_fill(attn_mask.unsqueeze(1), float("-inf"))
        weights = F.dropout(scores.softmax(dim=-1), p=self.dropout, training=self.training)

        out = torch.matmul(weights, v).transpose(1, 2).reshape(batch, tgt_len, heads * head_dim)
        return self.out_proj(out)


def sinusoidal_positions(length: int, dim: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    """(length, dim) absolute encodings: sin at even channels, cos at odd, base 10000."""
    position = torch.arange(length, dtype=torch.float32, device=device).unsqueeze(1)
    div_term = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32, device=device) * -(math.log(10000.0) / dim))
    pe = torch.zeros(length, dim, device=device)
    pe[:, 0::2] = torch.sin(position * div_term)
    pe[:, 1::2] = torch.cos(position * div_term)
    return pe.to(dtype)


class PositionalEncoding(nn.Module):
    """x * sqrt(d_model) + sinusoidal positions, then dropout. No parameters."""

    def __init__(self, d_model: int, dropout_rate: float):
        super().__init__()
        self.d_model = d_model
        self.xscale = math.sqrt(d_model)
        self.dropout = nn.Dropout(p=dropout_rate)

    def forward(self, x: Tensor) -> Tensor:
        """x: (batch, T, d_model)."""
        pe = sinusoidal_positions(x.shape[1], self.d_model, x.device, x.dtype)
        return self.dropout(x * self.xscale + pe)


class DecoderLayer(nn.Module):
    """Pre-norm block: causal self-attention, cross-attention to the memory, Swish feed-forward."""

    def __init__(
        self,
        d_model: int,
        attention_dim: int,
        num_heads: int,
        feedforward_dim: int,
        memory_dim: int,
        dropout: float = 0.1,
    ):
        super().__init__()
        self.norm_self_attn = nn.LayerNorm(d_model)
        self.self_attn = MultiHeadAttention(d_model, attention_dim, num_heads, dropout=0.0)
        self.norm_src_attn = nn.LayerNorm(d_model)
        self.src_attn = MultiHeadAttention(d_model, attention_dim, num_heads, memory_dim=memory_dim, dropout=0.0)
        self.norm_ff = nn.LayerNorm(d_model)
        self.feed_forward = nn.Sequential(  # indices 0 and 3 hold the weights, as in icefall
            nn.Linear(d_model, feedforward_dim),
            nn.SiLU(),
            nn.Dropout(dropout),
            nn.Linear(feedforward_dim, d_model),
        )
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, attn_mask: Tensor, memory: Tensor, memory_attn_mask: Tensor | None) -> Tensor:
        """x (batch, T, d_model); memory (batch, S, memory_dim); masks True where barred."""
        h = self.norm_self_attn(x)
        x = x + self.dropout(self.self_attn(h, h, h, attn_mask=attn_mask))
        h = self.norm_src_attn(x)
        x = x + self.dropout(self.src_attn(h, memory, memory, attn_mask=memory_attn_mask))
        return x + self.dropout(self.feed_forward(self.norm_ff(x)))


class TransformerDecoder(nn.Module):
    """Token embedding + positions, `num_decoder_layers` DecoderLayers, linear to the vocabulary."""

    def __init__(
        self,
        vocab_size: int,
        d_model: int = 512,
        num_decoder_layers: int = 6,
        attention_dim: int = 512,
        num_heads: int = 8,
        feedforward_dim: int = 2048,
        memory_dim: int = 512,
        dropout: float = 0.1,
    ):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, d_model)
        self.pos = PositionalEncoding(d_model, dropout_rate=0.1)
        self.num_layers = num_decoder_layers
        self.layers = nn.ModuleList(
            DecoderLayer(d_model, attention_dim, num_heads, feedforward_dim, memory_dim, dropout)
            for _ in range(num_decoder_layers)
        )
        self.output_layer = nn.Linear(d_model, vocab_size)

    def forward(self, x: Tensor, x_lens: Tensor, memory: Tensor, memory_lens: Tensor) -> Tensor:
        """x (batch, U) ids; memory (batch, S, memory_dim). Returns logits (batch, U, vocab)."""
        tokens = x.shape[1]
        x = self.pos(self.embed(x))
        future = torch.ones(tokens, tokens, dtype=torch.bool, device=x.device).triu(diagonal=1)
        attn_mask = _pad_mask(x_lens, tokens).unsqueeze(1) | future.unsqueeze(0)  # (batch, U, U)
        memory_attn_mask = _pad_mask(memory_lens, memory.shape[1]).unsqueeze(1)  # (batch, 1, S)
        for layer in self.layers:
            x = layer(x, attn_mask, memory, memory_attn_mask)
        return self.output_layer(x)


class AttentionDecoderModel(nn.Module):
    """The attention-decoder head of icefall's zipformer recipe (see the module docstring)."""

    def __init__(
        self,
        vocab_size: int,
        decoder_dim: int = 512,
        num_decoder_layers: int = 6,
        attention_dim: int = 512,
        num_heads: int = 8,
        feedforward_dim: int = 2048,
        memory_dim: int = 512,
        sos_id: int = 1,
        eos_id: int = 1,
        dropout: float = 0.1,
        ignore_id: int = -1,
        label_smoothing: float = 0.1,
    ):
        super().__init__()
        self.sos_id = sos_id
        self.eos_id = eos_id
        self.ignore_id = ignore_id
        self.decoder = TransformerDecoder(
            vocab_size=vocab_size,
            d_model=decoder_dim,
            num_decoder_layers=num_decoder_layers,
            attention_dim=attention_dim,
            num_heads=num_heads,
            feedforward_dim=feedforward_dim,
            memory_dim=memory_dim,
            dropout=dropout,
        )
        self.loss_fun = LabelSmoothingLoss(ignore_index=ignore_id, label_smoothing=label_smoothing, reduction="sum")

    def prepare_ys(
        self, ys: TokenIds, ys_lens: Tensor | None = None, device: torch.device | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Decoder input and target, each (batch, max(U) + 1) int64, plus the input lengths U + 1.

        ys_in = [sos, y..., eos padding]; ys_out = [y..., eos, ignore_id padding].
        """
        device = device if device is not None else self.decoder.embed.weight.device
        padded, lens = _as_padded(ys, ys_lens, device)
        batch = lens.numel()
        width = int(lens.max()) + 1 if batch else 1
        body = padded.new_zeros(batch, width)
        n = min(padded.shape[1], width)
        body[:, :n] = padded[:, :n]
        pos = torch.arange(width, device=device).unsqueeze(0)
        inside = pos < lens.unsqueeze(1)
        ys_out = body.masked_fill(~inside, self.ignore_id).masked_fill(pos == lens.unsqueeze(1), self.eos_id)
        sos = body.new_full((batch, 1), self.sos_id)
        ys_in = torch.cat([sos, body.masked_fill(~inside, self.eos_id)[:, :-1]], dim=1)
        return ys_in, lens + 1, ys_out

    def logits(
        self, encoder_out: Tensor, encoder_out_lens: Tensor, ys: TokenIds, ys_lens: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Decoder logits (batch, max(U) + 1, vocab) with teacher forcing, and their targets."""
        ys_in, ys_in_lens, ys_out = self.prepare_ys(ys, ys_lens, encoder_out.device)
        out = self.decoder(x=ys_in, x_lens=ys_in_lens, memory=encoder_out, memory_lens=encoder_out_lens)
        return out, ys_out

    def calc_att_loss(
        self, encoder_out: Tensor, encoder_out_lens: Tensor, ys: TokenIds, ys_lens: Tensor | None = None
    ) -> Tensor:
        """Label-smoothed cross entropy summed over all target tokens (and the final eos).

        encoder_out (batch, S, memory_dim); ys a list of id lists, or a padded (batch, U) or
        concatenated tensor with `ys_lens`.
        """
        logits, ys_out = self.logits(encoder_out, encoder_out_lens, ys, ys_lens)
        return self.loss_fun(logits, ys_out)

    forward = calc_att_loss

    def nll(
        self, encoder_out: Tensor, encoder_out_lens: Tensor, token_ids: TokenIds, ys_lens: Tensor | None = None
    ) -> Tensor:
        """Per-position negative log-likelihood (batch, max(U) + 1), zero after each eos."""
        logits, ys_out = self.logits(encoder_out, encoder_out_lens, token_ids, ys_lens)
        return F.cross_entropy(logits.transpose(1, 2), ys_out, ignore_index=self.ignore_id, reduction="none")
