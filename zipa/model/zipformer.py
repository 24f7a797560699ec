"""The Zipformer2 encoder (Yao et al., 2023) with icefall's module and parameter names.

Shapes inside the encoder are time-major: (time, batch, channels). Six stacks run at
different frame rates (`downsampling_factor`); each stack's output is upsampled back and
mixed with its input through a learned bypass. Training-only behaviour (layer skipping,
feature masking, regularisers, dropout) is switched off by `model.eval()`.
"""

from __future__ import annotations

import copy
import math
import random
import threading
from typing import cast

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from zipa.model.kernels import Linear, batched_matmul, cpu_inference, depthwise_over_time, is_exporting, linear
from zipa.model.scaling import (
    ActivationDropoutAndLinear,
    Balancer,
    BiasNorm,
    ChunkCausalDepthwiseConv1d,
    Dropout2,
    FloatLike,
    ScheduledFloat,
    Whiten,
    convert_num_channels,
    limit_param_value,
    penalize_abs_values_gt,
    scaled_linear,
    sequence_mask,
    shifted_bias,
    swoosh_feedforward,
    whitening_schedule,
)

# Attention scores of masked positions are set to this (not -inf: a fully masked row stays finite).
MASKED_SCORE = -1000.0


def _per_stack(value, num_stacks: int) -> tuple[int, ...]:
    value = (value,) if isinstance(value, int) else tuple(value)
    if len(value) == 1:
        return value * num_stacks
    assert len(value) == num_stacks, (value, num_stacks)
    return value


def _default_dropout() -> ScheduledFloat:
    return ScheduledFloat((0.0, 0.3), (20000.0, 0.1))


class Zipformer2(nn.Module):
    """Input (time, batch, encoder_dim[0]) at 50 Hz; output (time', batch, max(encoder_dim)) at
    50 / output_downsampling_factor Hz."""

    def __init__(
        self,
        output_downsampling_factor: int = 2,
        downsampling_factor: tuple[int, ...] = (2, 4),
        encoder_dim=384,
        num_encoder_layers=4,
        encoder_unmasked_dim=256,
        query_head_dim=24,
        pos_head_dim=4,
        value_head_dim=12,
        num_heads=8,
        feedforward_dim=1536,
        cnn_module_kernel=31,
        pos_dim: int = 192,
        dropout: FloatLike | None = None,
        warmup_batches: float = 4000.0,
        causal: bool = False,
        chunk_size: tuple[int, ...] = (-1,),
        left_context_frames: tuple[int, ...] = (-1,),
    ) -> None:
        super().__init__()
        if dropout is None:
            dropout = _default_dropout()
        num_stacks = len(downsampling_factor)
        stack = lambda v: _per_stack(v, num_stacks)  # noqa: E731
        self.output_downsampling_factor = output_downsampling_factor
        self.downsampling_factor = tuple(downsampling_factor)
        self.encoder_dim = encoder_dim = stack(encoder_dim)
        self.encoder_unmasked_dim = stack(encoder_unmasked_dim)
        self.num_encoder_layers = num_encoder_layers = stack(num_encoder_layers)
        self.query_head_dim = query_head_dim = stack(query_head_dim)
        self.value_head_dim = value_head_dim = stack(value_head_dim)
        self.num_heads = num_heads = stack(num_heads)
        self.cnn_module_kernel = cnn_module_kernel = stack(cnn_module_kernel)
        pos_head_dim = stack(pos_head_dim)
        feedforward_dim = stack(feedforward_dim)
        self.causal = causal
        self.chunk_size = tuple(chunk_size)
        self.left_context_frames = tuple(left_context_frames)
        assert all(u <= d for u, d in zip(self.encoder_unmasked_dim, encoder_dim))

        encoders = []
        for i in range(num_stacks):
            layer = Zipformer2EncoderLayer(
                embed_dim=encoder_dim[i],
                pos_dim=pos_dim,
                num_heads=num_heads[i],
                query_head_dim=query_head_dim[i],
                pos_head_dim=pos_head_dim[i],
                value_head_dim=value_head_dim[i],
                feedforward_dim=feedforward_dim[i],
                dropout=dropout,
                cnn_module_kernel=cnn_module_kernel[i],
                causal=causal,
            )
            # Warm-up: the stacks start learning one after another.
            encoder: nn.Module = Zipformer2Encoder(
                layer,
                num_encoder_layers[i],
                pos_dim=pos_dim,
                warmup_begin=warmup_batches * (i + 1) / (num_stacks + 1),
                warmup_end=warmup_batches * (i + 2) / (num_stacks + 1),
                final_layerdrop_rate=0.035 * (downsampling_factor[i] ** 0.5),
            )
            if downsampling_factor[i] != 1:
                encoder = DownsampledZipformer2Encoder(
                    encoder, dim=encoder_dim[i], downsample=downsampling_factor[i], dropout=dropout
                )
            encoders.append(encoder)
        self.encoders = nn.ModuleList(encoders)
        self.downsample_output = SimpleDownsample(
            max(encoder_dim), downsample=output_downsampling_factor, dropout=dropout
        )

    def forward(self, x: Tensor, x_lens: Tensor, src_key_padding_mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """x: (time, batch, encoder_dim[0]); src_key_padding_mask: (batch, time), True = padding.

        Returns (time', batch, max(encoder_dim)) and the output lengths.
        """
        feature_masks = self._feature_masks(x)
        chunk_size, left_context_chunks = self._chunk_info()
        attn_mask = self._attn_mask(x.shape[0], x.device, chunk_size, left_context_chunks)

        outputs = []
        for i, module in enumerate(self.encoders):
            ds = self.downsampling_factor[i]
            x = convert_num_channels(x, self.encoder_dim[i])
            x = module(
                x,
                chunk_size=chunk_size,
                feature_mask=feature_masks[i],
                src_key_padding_mask=None if src_key_padding_mask is None else src_key_padding_mask[..., ::ds],
                attn_mask=attn_mask,
            )
            outputs.append(x)

        x = self.downsample_output(self._full_dim_output(outputs))
        factor = self.output_downsampling_factor
        lengths = (x_lens + factor - 1) // factor
        return x, lengths

    def _feature_masks(self, x: Tensor) -> list:
        """Training: per-stack masks that zero the channels above `encoder_unmasked_dim` for a
        random ~12.5% (and more channels for ~23%) of sequences. Eval: all ones."""
        if not self.training:
            return [1.0] * len(self.encoder_dim)
        batch_size = x.shape[1]
        drop_prob = 0.125
        keep1 = (torch.rand(1, batch_size, 1, device=x.device) > drop_prob).to(x.dtype)
        keep2 = torch.logical_and(keep1, (torch.rand(1, batch_size, 1, device=x.device) > drop_prob).to(x.dtype)).to(
            x.dtype
        )
        masks = []
        for channels, u1 in zip(self.encoder_dim, self.encoder_unmasked_dim):
            u2 = u1 + (channels - u1) // 2
            mask = torch.ones(1, batch_size, channels, dtype=x.dtype, device=x.device)
            mask[:, :, u1:u2] *= keep1
            mask[:, :, u2:] *= keep2
            masks.append(mask)
        return masks

    def _chunk_info(self) -> tuple[int, int]:
        """(chunk_size, left_context_chunks); chosen at random per batch from the configured
        lists (a one-element list makes it fixed); (-1, -1) when not causal."""
        if not self.causal:
            return -1, -1
        chunk_size = random.choice(self.chunk_size)
        if chunk_size == -1:
            return -1, -1
        left_context_frames = random.choice(self.left_context_frames)
        if left_context_frames == -1:
            return chunk_size, -1
        return chunk_size, max(left_context_frames // chunk_size, 1)

    def _attn_mask(
        self, seq_len: int, device: torch.device, chunk_size: int, left_context_chunks: int
    ) -> Tensor | None:
        """(seq_len, seq_len) bool, True = masked: each frame sees its own chunk and
        `left_context_chunks` chunks before it."""
        if chunk_size <= 0:
            return None
        assert all(chunk_size % d == 0 for d in self.downsampling_factor), chunk_size
        if left_context_chunks >= 0:
            assert all(
                chunk_size * left_context_chunks >= (kernel // 2) * ds
                for kernel, ds in zip(self.cnn_module_kernel, self.downsampling_factor)
            )
        else:
            left_context_chunks = 1000000
        chunk = torch.arange(seq_len, dtype=torch.int32, device=device) // chunk_size
        src, tgt = chunk, chunk.unsqueeze(-1)
        return (src > tgt) | (src < tgt - left_context_chunks)

    def _full_dim_output(self, outputs: list[Tensor]) -> Tensor:
        """Take each channel from the most recent stack that has it."""
        pieces = [outputs[-1]]
        cur_dim = self.encoder_dim[-1]
        for i in range(len(outputs) - 2, -1, -1):
            dim = self.encoder_dim[i]
            if dim > cur_dim:
                pieces.append(outputs[i][..., cur_dim:dim])
                cur_dim = dim
        assert cur_dim == max(self.encoder_dim)
        return torch.cat(pieces, dim=-1) if len(pieces) > 1 else pieces[0]


class Zipformer2EncoderLayer(nn.Module):
    """One Zipformer block: ff1, non-linear attention, self-attention, conv, ff2, a mid
    bypass, self-attention (same weights as before), conv, ff3, BiasNorm, bypass."""

    def __init__(
        self,
        embed_dim: int,
        pos_dim: int,
        num_heads: int,
        query_head_dim: int,
        pos_head_dim: int,
        value_head_dim: int,
        feedforward_dim: int,
        dropout: FloatLike = 0.1,
        cnn_module_kernel: int = 31,
        causal: bool = False,
    ) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.bypass = BypassModule(embed_dim, skip_rate=ScheduledFloat((0.0, 0.5), (4000.0, 0.02), default=0))
        self.bypass_mid = BypassModule(embed_dim)
        skip = ((0.0, 0.2), (4000.0, 0.05), (16000, 0.0))
        self.attention_skip_rate = ScheduledFloat(*skip, default=0)
        self.conv_skip_rate = ScheduledFloat(*skip, default=0)
        self.ff2_skip_rate = ScheduledFloat((0.0, 0.1), (4000.0, 0.01), (50000.0, 0.0))
        self.ff3_skip_rate = ScheduledFloat((0.0, 0.1), (4000.0, 0.01), (50000.0, 0.0))
        self.const_attention_rate = ScheduledFloat((0.0, 0.25), (4000.0, 0.025), default=0)

        self.self_attn_weights = RelPositionMultiheadAttentionWeights(
            embed_dim,
            pos_dim=pos_dim,
            num_heads=num_heads,
            query_head_dim=query_head_dim,
            pos_head_dim=pos_head_dim,
        )
        self.self_attn1 = SelfAttention(embed_dim, num_heads, value_head_dim)
        self.self_attn2 = SelfAttention(embed_dim, num_heads, value_head_dim)
        self.feed_forward1 = FeedforwardModule(embed_dim, (feedforward_dim * 3) // 4, dropout)
        self.feed_forward2 = FeedforwardModule(embed_dim, feedforward_dim, dropout)
        self.feed_forward3 = FeedforwardModule(embed_dim, (feedforward_dim * 5) // 4, dropout)
        self.nonlin_attention = NonlinAttention(embed_dim, hidden_channels=3 * embed_dim // 4)
        self.conv_module1 = ConvolutionModule(embed_dim, cnn_module_kernel, causal=causal)
        self.conv_module2 = ConvolutionModule(embed_dim, cnn_module_kernel, causal=causal)
        # Unused by the computation; kept because released checkpoints contain it.
        self.bypass_scale = nn.Parameter(torch.full((embed_dim,), 0.5))
        self.norm = BiasNorm(embed_dim)

        self.balancer1 = Balancer(
            embed_dim, channel_dim=-1, min_positive=0.45, max_positive=0.55, min_abs=0.2, max_abs=4.0
        )
        self.balancer_na = Balancer(
            embed_dim,
            channel_dim=-1,
            min_positive=0.3,
            max_positive=0.7,
            min_abs=ScheduledFloat((0.0, 0.004), (4000.0, 0.02)),
            prob=0.05,
        )
        self.balancer_ff2 = Balancer(
            embed_dim,
            channel_dim=-1,
            min_positive=0.3,
            max_positive=0.7,
            min_abs=ScheduledFloat((0.0, 0.0), (4000.0, 0.1), default=0.0),
            max_abs=2.0,
            prob=0.05,
        )
        self.balancer_ff3 = Balancer(
            embed_dim,
            channel_dim=-1,
            min_positive=0.3,
            max_positive=0.7,
            min_abs=ScheduledFloat((0.0, 0.0), (4000.0, 0.2), default=0.0),
            max_abs=4.0,
            prob=0.05,
        )
        self.whiten = Whiten(
            num_groups=1, whitening_limit=whitening_schedule(4.0, ratio=3.0), prob=(0.025, 0.25), grad_scale=0.01
        )
        self.balancer2 = Balancer(
            embed_dim, channel_dim=-1, min_positive=0.45, max_positive=0.55, min_abs=0.1, max_abs=4.0
        )

    def forward(
        self,
        src: Tensor,
        pos_emb: Tensor,
        chunk_size: int = -1,
        attn_mask: Tensor | None = None,
        src_key_padding_mask: Tensor | None = None,
    ) -> Tensor:
        """src: (time, batch, embed_dim); pos_emb: (1, 2 * time - 1, pos_dim)."""
        if not self.training:
            return self._forward_eval(src, pos_emb, chunk_size, attn_mask, src_key_padding_mask)
        src_orig = src
        batch_size = src.shape[1]
        attn_weights = self.self_attn_weights(src, pos_emb, attn_mask=attn_mask, key_padding_mask=src_key_padding_mask)
        src = src + self.feed_forward1(src)

        attn_skip = sequence_mask(batch_size, float(self.attention_skip_rate), src)
        selected_attn_weights = attn_weights[0:1]
        if random.random() < float(self.const_attention_rate):
            # Replace the first head's weights by uniform attention over the unmasked frames.
            selected_attn_weights = (selected_attn_weights > 0.0).to(selected_attn_weights.dtype)
            selected_attn_weights = selected_attn_weights * (1.0 / selected_attn_weights.sum(dim=-1, keepdim=True))
        na = self.balancer_na(self.nonlin_attention(src, selected_attn_weights))
        src = src + _masked(na, attn_skip)
        src = src + _masked(self.self_attn1(src, attn_weights), attn_skip)
        conv_skip = float(self.conv_skip_rate)
        src = src + _masked(
            self.conv_module1(src, chunk_size=chunk_size, src_key_padding_mask=src_key_padding_mask),
            sequence_mask(batch_size, conv_skip, src),
        )
        src = src + _masked(
            self.balancer_ff2(self.feed_forward2(src)), sequence_mask(batch_size, float(self.ff2_skip_rate), src)
        )
        src = self.bypass_mid(src_orig, src)
        src = src + _masked(self.self_attn2(src, attn_weights), attn_skip)
        src = src + _masked(
            self.conv_module2(src, chunk_size=chunk_size, src_key_padding_mask=src_key_padding_mask),
            sequence_mask(batch_size, conv_skip, src),
        )
        src = src + _masked(
            self.balancer_ff3(self.feed_forward3(src)), sequence_mask(batch_size, float(self.ff3_skip_rate), src)
        )
        src = self.norm(self.balancer1(src))
        src = self.bypass(src_orig, src)
        return self.whiten(self.balancer2(src))

    def _forward_eval(
        self,
        src: Tensor,
        pos_emb: Tensor,
        chunk_size: int,
        attn_mask: Tensor | None,
        src_key_padding_mask: Tensor | None,
    ) -> Tensor:
        """The same computation with every training-only step left out."""
        src_orig = src
        attn_weights = self.self_attn_weights(
            src, pos_emb, attn_mask=attn_mask, key_padding_mask=src_key_padding_mask, reuse_storage=True
        )
        # Each residual sum is handed to the module's last product (see kernels.linear).
        src = self.feed_forward1(src, residual=src)
        src = self.nonlin_attention(src, attn_weights[0:1], residual=src)
        src = self.self_attn1(src, attn_weights, residual=src)
        src = self.conv_module1(src, chunk_size=chunk_size, src_key_padding_mask=src_key_padding_mask, residual=src)
        src = self.feed_forward2(src, residual=src)
        src = self.bypass_mid(src_orig, src)
        src = self.self_attn2(src, attn_weights, residual=src)
        src = self.conv_module2(src, chunk_size=chunk_size, src_key_padding_mask=src_key_padding_mask, residual=src)
        src = self.feed_forward3(src, residual=src)
        return self.bypass(src_orig, self.norm(src))


def _masked(x: Tensor, mask: Tensor | None) -> Tensor:
    return x if mask is None else x * mask


class Zipformer2Encoder(nn.Module):
    """A stack of `num_layers` copies of `encoder_layer` sharing one positional encoding."""

    def __init__(
        self,
        encoder_layer: nn.Module,
        num_layers: int,
        pos_dim: int,
        warmup_begin: float,
        warmup_end: float,
        initial_layerdrop_rate: float = 0.5,
        final_layerdrop_rate: float = 0.05,
    ) -> None:
        super().__init__()
        self.encoder_pos = CompactRelPositionalEncoding(pos_dim, dropout_rate=0.15, length_factor=1.0)
        self.layers = nn.ModuleList([copy.deepcopy(encoder_layer) for _ in range(num_layers)])
        self.num_layers = num_layers
        assert 0 <= warmup_begin <= warmup_end, (warmup_begin, warmup_end)
        # Layer dropout decays layer by layer across this stack's share of the warm-up.
        delta = (warmup_end - warmup_begin) / num_layers
        for i, layer in enumerate(self.layers):
            begin = warmup_begin + i * delta
            bypass = cast(BypassModule, layer.bypass)  # the layers are Zipformer2EncoderLayers
            bypass.skip_rate = ScheduledFloat(
                (begin, initial_layerdrop_rate), (begin + delta, final_layerdrop_rate), default=0.0
            )

    def forward(
        self,
        src: Tensor,
        chunk_size: int = -1,
        feature_mask=1.0,
        attn_mask: Tensor | None = None,
        src_key_padding_mask: Tensor | None = None,
    ) -> Tensor:
        pos_emb = self.encoder_pos(src)
        training = self.training
        if training:
            src = src * feature_mask
        for layer in self.layers:
            src = layer(
                src, pos_emb, chunk_size=chunk_size, attn_mask=attn_mask, src_key_padding_mask=src_key_padding_mask
            )
            if training:
                src = src * feature_mask
        return src


class BypassModule(nn.Module):
    """src_orig + (src - src_orig) * bypass_scale; in training the scale is kept within
    [scale_min, scale_max] and whole sequences may skip the layer (`skip_rate`)."""

    def __init__(
        self,
        embed_dim: int,
        skip_rate: FloatLike = 0.0,
        straight_through_rate: FloatLike = 0.0,
        scale_min: FloatLike | None = None,
        scale_max: FloatLike = 1.0,
    ):
        super().__init__()
        self.bypass_scale = nn.Parameter(torch.full((embed_dim,), 0.5))
        self.skip_rate = skip_rate
        self.straight_through_rate = straight_through_rate
        self.scale_min = ScheduledFloat((0.0, 0.9), (20000.0, 0.2), default=0) if scale_min is None else scale_min
        self.scale_max = scale_max

    def _scale(self, batch_size: int) -> Tensor:
        if not self.training:
            return self.bypass_scale
        scale = limit_param_value(self.bypass_scale, float(self.scale_min), float(self.scale_max))
        skip_rate = float(self.skip_rate)
        if skip_rate != 0.0:
            scale = scale * (torch.rand((batch_size, 1), device=scale.device) > skip_rate)
        straight_through_rate = float(self.straight_through_rate)
        if straight_through_rate != 0.0:
            straight = torch.rand((batch_size, 1), device=scale.device) < straight_through_rate
            scale = torch.maximum(scale, straight.to(scale.dtype))
        return scale

    def forward(self, src_orig: Tensor, src: Tensor) -> Tensor:
        if not (self.training or is_exporting()):  # the same sum in one pass
            # lerp takes one dtype; under autocast `src` comes out of a product in bfloat16 or
            # float16 while `src_orig` and the scale may be float32: the sum's promoted dtype.
            dtype = torch.promote_types(torch.promote_types(src_orig.dtype, src.dtype), self.bypass_scale.dtype)
            return torch.lerp(src_orig.to(dtype), src.to(dtype), self.bypass_scale.to(dtype))
        return src_orig + (src - src_orig) * self._scale(src.shape[1])


class DownsampledZipformer2Encoder(nn.Module):
    """Runs `encoder` at 1/downsample of the frame rate and brings the result back."""

    def __init__(self, encoder: nn.Module, dim: int, downsample: int, dropout: FloatLike):
        super().__init__()
        self.downsample_factor = downsample
        self.downsample = SimpleDownsample(dim, downsample, dropout)
        self.num_layers = encoder.num_layers
        self.encoder = encoder
        self.upsample = SimpleUpsample(dim, downsample)
        self.out_combiner = BypassModule(dim)

    def forward(
        self,
        src: Tensor,
        chunk_size: int = -1,
        feature_mask=1.0,
        attn_mask: Tensor | None = None,
        src_key_padding_mask: Tensor | None = None,
    ) -> Tensor:
        src_orig = src
        ds = self.downsample_factor
        src = self.downsample(src)
        if attn_mask is not None:
            attn_mask = attn_mask[::ds, ::ds]
        src = self.encoder(
            src,
            chunk_size=chunk_size // ds,
            feature_mask=feature_mask,
            attn_mask=attn_mask,
            src_key_padding_mask=src_key_padding_mask,
        )
        src = self.upsample(src)[: src_orig.shape[0]]
        return self.out_combiner(src_orig, src)


class SimpleDownsample(nn.Module):
    """Weighted sum of each group of `downsample` frames (weights: softmax of `bias`); the last
    frame is repeated to fill the final group."""

    def __init__(self, channels: int, downsample: int, dropout: FloatLike):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(downsample))
        self.downsample = downsample

    def forward(self, src: Tensor) -> Tensor:
        seq_len, batch_size, channels = src.shape
        ds = self.downsample
        if ds == 1:
            # softmax of one weight is exactly 1.
            return src
        out_len = (seq_len + ds - 1) // ds
        pad = out_len * ds - seq_len
        if is_exporting():
            # Whether padding is needed depends on the length: index the frames instead
            # (the last frame repeated), which holds for every length.
            index = torch.arange(out_len * ds, device=src.device).clamp(max=seq_len - 1)
            src = src.index_select(0, index)
        elif pad:
            src = torch.cat((src, src[-1:].expand(pad, batch_size, channels)), dim=0)
        src = src.reshape(out_len, ds, batch_size, channels)
        weights = self.bias.softmax(dim=0).reshape(1, ds, 1, 1)
        return (src * weights).sum(dim=1)


class SimpleUpsample(nn.Module):
    """Repeats each frame `upsample` times."""

    def __init__(self, num_channels: int, upsample: int):
        super().__init__()
        self.upsample = upsample

    def forward(self, src: Tensor) -> Tensor:
        seq_len, batch_size, channels = src.shape
        return src.repeat_interleave(self.upsample, dim=0)


class CompactRelPositionalEncoding(nn.Module):
    """Relative positional encoding of offsets -(T-1)..(T-1).

    Offsets are log-compressed beyond about sqrt(embed_dim), mapped through atan to a finite
    interval, and encoded as cos/sin of multiples of that angle; the last channel is 1 (a bias).
    """

    def __init__(self, embed_dim: int, dropout_rate: FloatLike, max_len: int = 1000, length_factor: float = 1.0):
        super().__init__()
        assert embed_dim % 2 == 0, embed_dim
        assert length_factor >= 1.0, length_factor
        self.embed_dim = embed_dim
        self.length_factor = length_factor
        self.dropout = Dropout2(dropout_rate)
        self._cache: Tensor | None = None  # (2 * T - 1, embed_dim) for the longest T seen

    def _table(self, seq_len: int, like: Tensor) -> Tensor:
        cache = self._cache
        if cache is None or cache.shape[0] < 2 * seq_len - 1 or cache.device != like.device:
            length = max(seq_len, 1000)  # small lengths share one table
            with torch.inference_mode(False):  # a table made during inference must serve training too
                cache = self._compute(length, like.device)
            self._cache = cache
        return cache.to(like.dtype)

    def _compute(self, seq_len: int, device: torch.device) -> Tensor:
        x = torch.arange(-(seq_len - 1), seq_len, device=device).to(torch.float32).unsqueeze(1)
        freqs = 1 + torch.arange(self.embed_dim // 2, device=device)
        compression_length = self.embed_dim**0.5
        x_compressed = (
            compression_length * x.sign() * ((x.abs() + compression_length).log() - math.log(compression_length))
        )
        length_scale = self.length_factor * self.embed_dim / (2.0 * math.pi)
        x_atan = (x_compressed / length_scale).atan()
        # Channels interleave cos and sin (cos in even ones); the last channel is 1. Written with
        # stack/cat rather than slice assignment so that it also traces with a symbolic length.
        angles = x_atan * freqs
        pe = torch.stack((angles.cos(), angles.sin()), dim=-1).reshape(x.shape[0], self.embed_dim)
        return torch.cat((pe[:, :-1], torch.ones_like(pe[:, -1:])), dim=1)

    def forward(self, x: Tensor) -> Tensor:
        """x: (time, batch, *). Returns (1, 2 * time - 1, embed_dim)."""
        seq_len = x.shape[0]
        if is_exporting():
            # In the graph, for exactly this length: a cached table would be baked in as a
            # constant of the example's length.
            return self.dropout(self._compute(seq_len, x.device).to(x.dtype).unsqueeze(0))
        table = self._table(seq_len, x)
        center = table.shape[0] // 2
        pos_emb = table[center - seq_len + 1 : center + seq_len].unsqueeze(0)
        return self.dropout(pos_emb)


class RelPositionMultiheadAttentionWeights(nn.Module):
    """Attention weights (num_heads, batch, tgt_time, src_time) from query-key products plus a
    relative-position term (a small per-head 'position query' against the projected encoding)."""

    def __init__(
        self,
        embed_dim: int,
        pos_dim: int,
        num_heads: int,
        query_head_dim: int,
        pos_head_dim: int,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.query_head_dim = query_head_dim
        self.pos_head_dim = pos_head_dim
        self.dropout = dropout
        self.pos_emb_skip_rate = ScheduledFloat((0.0, 0.5), (4000.0, 0.0))
        in_proj_dim = (2 * query_head_dim + pos_head_dim) * num_heads
        self.in_proj = scaled_linear(embed_dim, in_proj_dim, bias=True, initial_scale=query_head_dim**-0.25)
        self.whiten_keys = Whiten(
            num_groups=num_heads, whitening_limit=whitening_schedule(3.0), prob=(0.025, 0.25), grad_scale=0.025
        )
        self.balance_keys = Balancer(
            query_head_dim * num_heads,
            channel_dim=-1,
            min_positive=0.4,
            max_positive=0.6,
            min_abs=0.0,
            max_abs=100.0,
            prob=0.025,
        )
        self.linear_pos = scaled_linear(pos_dim, num_heads * pos_head_dim, bias=False, initial_scale=0.05)

    def forward(
        self,
        x: Tensor,
        pos_emb: Tensor,
        key_padding_mask: Tensor | None = None,
        attn_mask: Tensor | None = None,
        reuse_storage: bool = False,
    ) -> Tensor:
        """x: (time, batch, embed_dim); pos_emb: (1, 2 * time - 1, pos_dim);
        key_padding_mask: (batch, time); attn_mask: (time, time). True = masked.
        `reuse_storage` (CPU inference): the weights are written to this thread's reused buffer
        (`_reused_weights_storage`), valid until the next such call in the thread."""
        seq_len, batch_size, _ = x.shape
        num_heads, query_head_dim, pos_head_dim = self.num_heads, self.query_head_dim, self.pos_head_dim
        query_dim = query_head_dim * num_heads
        x = self.in_proj(x)
        q = x[..., :query_dim]
        k = x[..., query_dim : 2 * query_dim]
        p = x[..., 2 * query_dim :]
        if self.training:
            k = self.whiten_keys(self.balance_keys(k))

        q = q.reshape(seq_len, batch_size, num_heads, query_head_dim).permute(2, 1, 0, 3)
        p = p.reshape(seq_len, batch_size, num_heads, pos_head_dim).permute(2, 1, 0, 3)
        k = k.reshape(seq_len, batch_size, num_heads, query_head_dim).permute(2, 1, 3, 0)
        use_pos = not self.training or random.random() >= float(self.pos_emb_skip_rate)
        if use_pos:
            pos = self.linear_pos(pos_emb)
            pos = pos.reshape(-1, 2 * seq_len - 1, num_heads, pos_head_dim).permute(2, 0, 3, 1)
        if not self.training and cpu_inference(x, under_autocast=True):
            # (in place, with out= products: no autograd there; under autocast q, k, p and pos
            # are in its dtype already, and so are the weights)
            storage = _reused_weights_storage(num_heads * batch_size * seq_len**2, x) if reuse_storage else None
            return _attention_weights_by_bands(q, k, p, pos, key_padding_mask, attn_mask, storage)

        attn_scores = torch.matmul(q, k)  # (head, batch, time1, time2)
        if use_pos:
            pos_scores = torch.matmul(p, pos)  # (head, batch, time1, 2 * time1 - 1)
            # In place: the product's backward needs only its inputs.
            attn_scores.add_(_relative_to_absolute(pos_scores, seq_len))

        if self.training and random.random() < 0.1:
            # (cloned: the masking below works in place, which a custom Function's output forbids)
            attn_scores = penalize_abs_values_gt(attn_scores, limit=25.0, penalty=1.0e-04).clone()
        if attn_mask is not None:
            attn_scores.masked_fill_(attn_mask, MASKED_SCORE)
        if key_padding_mask is not None:
            attn_scores.masked_fill_(key_padding_mask.unsqueeze(1), MASKED_SCORE)
        attn_weights = attn_scores.softmax(dim=-1)
        if self.training and self.dropout > 0:
            attn_weights = nn.functional.dropout(attn_weights, p=self.dropout, training=True)
        return attn_weights


# Rows per band in `_attention_weights_by_bands`: a band's scores of all heads take about this
# many bytes per thread, so that each core's share stays in its L2 cache (1-2 MiB on the CPUs
# measured) from the product to the softmax. At 30 s (50 Hz layer, small, 1 thread, Intel Xeon)
# 1 MiB took 25 ms where 2 MiB took 32; on the AMD EPYC 2 MiB at 2 threads was the best.
_BAND_BYTES_PER_THREAD = 1 << 20


# Attention weights of up to this many elements go to a buffer kept per thread and reused by the
# next layer (`_reused_weights_storage`); longer ones are allocated for each layer.
_MAX_REUSED_WEIGHTS = 1 << 26
_thread_storage = threading.local()


def _reused_weights_storage(numel: int, like: Tensor) -> Tensor | None:
    """A flat buffer of `numel` elements of `like`'s dtype and device, kept for this thread and
    handed to every encoder layer's attention weights in turn (each layer is done with its
    weights before the next one computes its own). Without it each layer at 50 Hz allocates
    tens of MB afresh (36 MB for the small model at 30 s), which glibc maps from the kernel
    and the kernel zeroes page by page: about 9,000 page faults per layer. None above
    `_MAX_REUSED_WEIGHTS` (such a buffer is not worth keeping)."""
    if numel > _MAX_REUSED_WEIGHTS:
        return None
    buffer = getattr(_thread_storage, "weights", None)
    if (
        buffer is None
        or buffer.numel() < numel
        or buffer.dtype != like.dtype
        or buffer.device != like.device
        or buffer.is_inference() != torch.is_inference_mode_enabled()  # inference tensors stay in inference mode
    ):
        buffer = _thread_storage.weights = torch.empty(numel, dtype=like.dtype, device=like.device)
    return buffer[:numel]


def _attention_weights_by_bands(
    q: Tensor,
    k: Tensor,
    p: Tensor,
    pos: Tensor,
    key_padding_mask: Tensor | None,
    attn_mask: Tensor | None,
    storage: Tensor | None = None,
) -> Tensor:
    """CPU inference path of RelPositionMultiheadAttentionWeights: the same scores and softmax,
    computed one head, one utterance and one band of query rows at a time (on a GPU, where each
    product is a kernel launch, the whole batch stays one product).

    q: (head, batch, T, query_head_dim); k: (head, batch, query_head_dim, T);
    p: (head, batch, T, pos_head_dim); pos: (head, 1, pos_head_dim, 2T - 1).
    Row i uses relative offsets T - 1 - i ... 2T - 2 - i, so a band of rows [i0, i1) needs only
    the T + (i1 - i0) - 1 position columns from T - i1 on, where the whole product computes all
    2T - 1 for every row and writes twice the T x T scores to memory before reading half back.
    Each element is the same sum of the same products as in `forward`'s training path, and a
    band's scores stay in cache from the product to the softmax: at 30 s this took the weights
    from 15.6 to 8.4 ms per layer at 50 Hz (small model, batch 1, 2 threads). A band is one
    head's rows, contiguous in `weights`, so that each product writes its output in place (a
    band across heads is strided there, and PyTorch's batched product then computes it
    elsewhere and copies it: 0.44 against 0.23 ms per band on the Intel Xeon). `storage`: flat
    memory for the weights (else allocated)."""
    num_heads, batch_size, seq_len, _ = q.shape
    shape = (num_heads, batch_size, seq_len, seq_len)
    weights = q.new_empty(shape) if storage is None else storage.view(shape)
    band_bytes = _BAND_BYTES_PER_THREAD * torch.get_num_threads()
    if band_bytes >= 4 * num_heads * batch_size * seq_len * seq_len:  # short: all heads and utterances at once
        _attention_band(weights, q, k, p, pos, slice(None), 0, seq_len, key_padding_mask, attn_mask)
        return weights
    rows = max(8, band_bytes // (4 * seq_len))
    for head in range(num_heads):
        for utt in range(batch_size):
            for start in range(0, seq_len, rows):
                end = min(seq_len, start + rows)
                _attention_band(
                    weights[head, utt], q[head, utt], k[head, utt], p[head, utt], pos[head, 0],
                    utt, start, end, key_padding_mask, attn_mask,
                )  # fmt: skip
    return weights


def _attention_band(
    weights: Tensor,
    q: Tensor,
    k: Tensor,
    p: Tensor,
    pos: Tensor,
    utt: int | slice,
    start: int,
    end: int,
    key_padding_mask: Tensor | None,
    attn_mask: Tensor | None,
) -> None:
    """Rows [start, end) of `weights` (..., T, T), from the matching slices of q, k, p and pos
    (any leading dimensions, as in `_attention_weights_by_bands`; `utt` indexes the key padding
    mask): the position term, then the query-key product added to it in place, the masks and
    the softmax, all where the weights are stored."""
    seq_len = weights.shape[-1]
    scores = weights[..., start:end, :]
    band = torch.matmul(p[..., start:end, :], pos[..., seq_len - end : 2 * seq_len - 1 - start])
    torch.baddbmm(
        _relative_to_absolute(band, seq_len).reshape((-1,) + scores.shape[-2:]),
        q[..., start:end, :].reshape((-1, end - start, q.shape[-1])),
        k.reshape((-1,) + k.shape[-2:]),
        out=scores.view((-1,) + scores.shape[-2:]),
    )
    if attn_mask is not None:
        scores.masked_fill_(attn_mask[start:end], MASKED_SCORE)
    if key_padding_mask is not None:
        mask = key_padding_mask[utt]
        scores.masked_fill_(mask.unsqueeze(-2) if mask.dim() > 1 else mask, MASKED_SCORE)
    torch.ops.aten._softmax.out(scores, -1, False, out=scores)


def _relative_to_absolute(pos_scores: Tensor, seq_len: int) -> Tensor:
    """(..., R, T + R - 1) scores of R query rows by relative offset (row i's column n = offset
    n - (R - 1 - i), so R = T gives the usual (T, 2T - 1) with column n = offset n - (T - 1)) ->
    (..., R, T) with [i, j] = score of offset j - i. A strided view, no copy (while exporting,
    the same elements picked by an index: the ONNX exporters do not support as_strided)."""
    if is_exporting():
        return _relative_to_absolute_by_index(pos_scores, seq_len)
    pos_scores = pos_scores.contiguous()
    *lead, rows, width = pos_scores.shape
    s2, s3 = pos_scores.stride()[-2:]
    return pos_scores.as_strided(
        (*lead, rows, seq_len),
        (*pos_scores.stride()[:-2], s2 - s3, s3),
        storage_offset=pos_scores.storage_offset() + s3 * (width - seq_len),
    )


def _relative_to_absolute_by_index(pos_scores: Tensor, seq_len: int) -> Tensor:
    """`_relative_to_absolute` as one index_select (ONNX Gather) over each (T, 2T - 1) block
    flattened: [i, j] is element i * (2T - 1) + j - i + T - 1. The (T, T) index is shared by
    all heads and utterances."""
    rows = torch.arange(seq_len, device=pos_scores.device).unsqueeze(1)
    cols = torch.arange(seq_len, device=pos_scores.device).unsqueeze(0)
    index = (rows * (2 * seq_len - 2) + cols + (seq_len - 1)).reshape(-1)
    lead = pos_scores.shape[:-2]
    flat = pos_scores.reshape(lead + (seq_len * (2 * seq_len - 1),))
    return flat.index_select(-1, index).reshape(lead + (seq_len, seq_len))


class SelfAttention(nn.Module):
    """Applies precomputed attention weights to projected values."""

    def __init__(self, embed_dim: int, num_heads: int, value_head_dim: int) -> None:
        super().__init__()
        self.in_proj = Linear(embed_dim, num_heads * value_head_dim, bias=True)
        self.out_proj = scaled_linear(num_heads * value_head_dim, embed_dim, bias=True, initial_scale=0.05)
        self.whiten = Whiten(
            num_groups=1, whitening_limit=whitening_schedule(7.5, ratio=3.0), prob=(0.025, 0.25), grad_scale=0.01
        )

    def forward(self, x: Tensor, attn_weights: Tensor, residual: Tensor | None = None) -> Tensor:
        """x: (time, batch, embed_dim); attn_weights: (heads, batch, time, time). With
        `residual` (inference only): residual + the output."""
        seq_len, batch_size, _ = x.shape
        num_heads = attn_weights.shape[0]
        x = self.in_proj(x).reshape(seq_len, batch_size, num_heads, -1).permute(2, 1, 0, 3)
        x = batched_matmul(attn_weights, x)  # (heads, batch, time, value_head_dim)
        x = x.permute(2, 1, 0, 3).reshape(seq_len, batch_size, -1)
        if residual is not None:
            return linear(x, self.out_proj.weight, self.out_proj.bias, residual)
        return self.whiten(self.out_proj(x))


class FeedforwardModule(nn.Module):
    """Linear -> SwooshL -> dropout -> Linear."""

    def __init__(self, embed_dim: int, feedforward_dim: int, dropout: FloatLike):
        super().__init__()
        self.in_proj = Linear(embed_dim, feedforward_dim, bias=True)
        self.hidden_balancer = Balancer(
            feedforward_dim, channel_dim=-1, min_positive=0.3, max_positive=1.0, min_abs=0.75, max_abs=5.0
        )
        self.out_proj = ActivationDropoutAndLinear(
            feedforward_dim,
            embed_dim,
            activation="SwooshL",
            dropout_p=dropout,
            dropout_shared_dim=0,
            bias=True,
            initial_scale=0.1,
        )
        self.out_whiten = Whiten(
            num_groups=1, whitening_limit=whitening_schedule(7.5), prob=(0.025, 0.25), grad_scale=0.01
        )

    def forward(self, x: Tensor, residual: Tensor | None = None) -> Tensor:
        """With `residual` (inference only): residual + the output."""
        if not self.training:
            out = self.out_proj
            return swoosh_feedforward(
                x,
                self.in_proj.weight,
                self.in_proj.bias,
                "SwooshL",
                out.weight,
                out.bias,
                residual,
                out.absorbed_bias(),
            )
        return self.out_whiten(self.out_proj(self.hidden_balancer(self.in_proj(x))))


class NonlinAttention(nn.Module):
    """Like the conv module, with attention (the first head's weights) in place of the conv:
    out_proj(attend(x * tanh(s)) * y) where s, x, y are three projections of the input."""

    def __init__(self, channels: int, hidden_channels: int) -> None:
        super().__init__()
        self.hidden_channels = hidden_channels
        self.in_proj = Linear(channels, hidden_channels * 3, bias=True)
        self.balancer = Balancer(
            hidden_channels,
            channel_dim=-1,
            min_positive=ScheduledFloat((0.0, 0.25), (20000.0, 0.05)),
            max_positive=ScheduledFloat((0.0, 0.75), (20000.0, 0.95)),
            min_abs=0.5,
            max_abs=5.0,
        )
        self.out_proj = scaled_linear(hidden_channels, channels, bias=True, initial_scale=0.05)
        self.whiten1 = Whiten(
            num_groups=1, whitening_limit=whitening_schedule(5.0), prob=(0.025, 0.25), grad_scale=0.01
        )
        self.whiten2 = Whiten(
            num_groups=1, whitening_limit=whitening_schedule(5.0, ratio=3.0), prob=(0.025, 0.25), grad_scale=0.01
        )

    def forward(self, x: Tensor, attn_weights: Tensor, residual: Tensor | None = None) -> Tensor:
        """x: (time, batch, channels); attn_weights: (heads, batch, time, time). With
        `residual` (inference only): residual + the output."""
        seq_len, batch_size, _ = x.shape
        s, x, y = self.in_proj(x).chunk(3, dim=2)
        x = self.whiten1(x) * torch.tanh(self.balancer(s))
        num_heads = attn_weights.shape[0]
        x = x.reshape(seq_len, batch_size, num_heads, -1).permute(2, 1, 0, 3)
        x = batched_matmul(attn_weights, x)
        x = x.permute(2, 1, 0, 3).reshape(seq_len, batch_size, -1)
        if residual is not None:
            return linear(x * y, self.out_proj.weight, self.out_proj.bias, residual)
        return self.whiten2(self.out_proj(x * y))


class ConvolutionModule(nn.Module):
    """GLU (x * sigmoid(s)) -> depthwise conv over time -> SwooshR -> Linear."""

    def __init__(self, channels: int, kernel_size: int, causal: bool) -> None:
        super().__init__()
        assert kernel_size % 2 == 1, kernel_size
        self.causal = causal
        self.in_proj = Linear(channels, 2 * channels)
        self.balancer1 = Balancer(
            channels,
            channel_dim=-1,
            min_positive=ScheduledFloat((0.0, 0.05), (8000.0, 0.025)),
            max_positive=1.0,
            min_abs=1.5,
            max_abs=ScheduledFloat((0.0, 5.0), (8000.0, 10.0), default=1.0),
        )
        self.depthwise_conv: nn.Module  # a ChunkCausalDepthwiseConv1d when causal, else an nn.Conv1d
        if causal:
            self.depthwise_conv = ChunkCausalDepthwiseConv1d(channels=channels, kernel_size=kernel_size)
        else:
            self.depthwise_conv = nn.Conv1d(channels, channels, kernel_size, padding=kernel_size // 2, groups=channels)
        self.balancer2 = Balancer(
            channels,
            channel_dim=1,
            min_positive=ScheduledFloat((0.0, 0.1), (8000.0, 0.05)),
            max_positive=1.0,
            min_abs=ScheduledFloat((0.0, 0.2), (20000.0, 0.5)),
            max_abs=10.0,
        )
        self.whiten = Whiten(num_groups=1, whitening_limit=whitening_schedule(7.5), prob=(0.025, 0.25), grad_scale=0.01)
        self.out_proj = ActivationDropoutAndLinear(
            channels, channels, activation="SwooshR", dropout_p=0.0, initial_scale=0.05
        )

    def forward(
        self,
        x: Tensor,
        src_key_padding_mask: Tensor | None = None,
        chunk_size: int = -1,
        residual: Tensor | None = None,
    ) -> Tensor:
        """x: (time, batch, channels); src_key_padding_mask: (batch, time), True = padding. With
        `residual` (inference only): residual + the output."""
        if not (self.training or self.causal or is_exporting()):
            return self._forward_eval(x, src_key_padding_mask, residual)
        if residual is not None:
            return residual + self.forward(x, src_key_padding_mask, chunk_size)
        x, s = self.in_proj(x).chunk(2, dim=2)
        x = x * torch.sigmoid(self.balancer1(s))
        x = x.permute(1, 2, 0)  # (batch, channels, time)
        if src_key_padding_mask is not None:
            x = x.masked_fill(src_key_padding_mask.unsqueeze(1), 0.0)
        if self.causal:
            x = self.depthwise_conv(x, chunk_size=chunk_size)
        elif not self.training:
            conv = cast(nn.Conv1d, self.depthwise_conv)
            shifted = F.conv1d(
                x, conv.weight, shifted_bias(conv.bias, "SwooshR"), padding=conv.padding, groups=conv.groups
            )
            return self.out_proj.forward_shifted(shifted.permute(2, 0, 1))
        else:
            x = self.depthwise_conv(x)
        x = self.balancer2(x).permute(2, 0, 1)  # (time, batch, channels)
        return self.out_proj(self.whiten(x))

    def _forward_eval(self, x: Tensor, src_key_padding_mask: Tensor | None, residual: Tensor | None) -> Tensor:
        """Inference, non-causal: the depthwise conv as a 2-D conv on channels-last data
        (`kernels.depthwise_over_time`: the same products and sums, in another order, outputs
        within ~1e-6); SwooshR's shift and constant folded into the neighbouring biases.
        (Exporting takes the conv1d path of `forward`.)"""
        x = F.glu(self.in_proj(x), dim=2)  # x * sigmoid(s) of the two halves x, s; (time, batch, channels)
        if src_key_padding_mask is not None:
            x.masked_fill_(src_key_padding_mask.t().unsqueeze(-1), 0.0)
        conv = cast(nn.Conv1d, self.depthwise_conv)  # not causal
        x = x.transpose(0, 1).contiguous()  # (batch, time, channels)
        shifted = depthwise_over_time(x, conv.weight, shifted_bias(conv.bias, "SwooshR"), int(conv.padding[0]))
        return self.out_proj.forward_shifted(shifted.permute(2, 0, 1), residual)
