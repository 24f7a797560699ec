"""Transducer prediction network (stateless decoder) and joiner, with icefall's key layout."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from zipa.model.kernels import Linear
from zipa.model.scaling import Balancer, scaled_linear


class Decoder(nn.Module):
    """Stateless decoder: embeddings of the last `context_size` tokens mixed by a grouped
    1-D conv (groups of 4 channels) and a ReLU. Negative ids embed to zeros."""

    def __init__(self, vocab_size: int, decoder_dim: int, blank_id: int, context_size: int):
        super().__init__()
        assert context_size >= 1, context_size
        self.embedding = nn.Embedding(vocab_size, decoder_dim)
        self.balancer = Balancer(
            decoder_dim, channel_dim=-1, min_positive=0.0, max_positive=1.0, min_abs=0.5, max_abs=1.0, prob=0.05
        )
        self.blank_id = blank_id
        self.context_size = context_size
        self.vocab_size = vocab_size
        self.conv: nn.Module
        self.balancer2: nn.Module
        if context_size > 1:
            self.conv = nn.Conv1d(
                decoder_dim, decoder_dim, kernel_size=context_size, padding=0, groups=decoder_dim // 4, bias=False
            )
            self.balancer2 = Balancer(
                decoder_dim, channel_dim=-1, min_positive=0.0, max_positive=1.0, min_abs=0.5, max_abs=1.0, prob=0.05
            )
        else:
            self.conv = nn.Identity()
            self.balancer2 = nn.Identity()

    def forward(self, y: Tensor, need_pad: bool = True) -> Tensor:
        """y: (batch, U) token ids. With need_pad, the context is left-padded so the output has
        U frames (training); without, U must equal context_size and one frame comes out.

        Returns (batch, U or 1, decoder_dim).
        """
        y = y.to(torch.int64)
        out = self.embedding(y.clamp(min=0)) * (y >= 0).unsqueeze(-1)
        out = self.balancer(out)
        if self.context_size > 1:
            out = out.permute(0, 2, 1)
            if need_pad:
                out = F.pad(out, (self.context_size - 1, 0))
            else:
                assert out.shape[-1] == self.context_size, out.shape
            out = F.relu(self.conv(out).permute(0, 2, 1))
            out = self.balancer2(out)
        return out


class Joiner(nn.Module):
    """logits = output_linear(tanh(encoder_proj(enc) + decoder_proj(dec)))."""

    def __init__(self, encoder_dim: int, decoder_dim: int, joiner_dim: int, vocab_size: int):
        super().__init__()
        self.encoder_proj = scaled_linear(encoder_dim, joiner_dim, initial_scale=0.25)
        self.decoder_proj = scaled_linear(decoder_dim, joiner_dim, initial_scale=0.25)
        self.output_linear = Linear(joiner_dim, vocab_size)

    def forward(self, encoder_out: Tensor, decoder_out: Tensor, project_input: bool = True) -> Tensor:
        """Inputs broadcast against each other, e.g. (N, T, s_range, C) each; the projections
        are skipped when `project_input` is False (already applied)."""
        assert encoder_out.ndim == decoder_out.ndim, (encoder_out.shape, decoder_out.shape)
        if project_input:
            logit = self.encoder_proj(encoder_out) + self.decoder_proj(decoder_out)
        else:
            logit = encoder_out + decoder_out
        return self.output_linear(torch.tanh(logit))
