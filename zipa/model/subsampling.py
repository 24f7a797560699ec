"""The convolutional front end: 100 Hz fbank frames -> 50 Hz embeddings (icefall's names)."""

from __future__ import annotations

from typing import cast

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from zipa.model.kernels import Linear, is_exporting, linear
from zipa.model.scaling import (
    SWOOSH_SHIFT,
    Balancer,
    BiasNorm,
    Dropout3,
    FloatLike,
    ScaleGrad,
    ScheduledFloat,
    SwooshL,
    SwooshR,
    Whiten,
    conv_after_swoosh,
    shifted_bias,
    swoosh_feedforward,
    swoosh_from_shifted,
)

# The shortest input giving one output frame: (T - 7) // 2 >= 1.
MIN_FEATURE_FRAMES = 9


class ConvNeXt(nn.Module):
    """Residual block: depthwise 7x7 conv -> 1x1 conv (x3 channels) -> SwooshL -> 1x1 conv."""

    def __init__(
        self,
        channels: int,
        hidden_ratio: int = 3,
        kernel_size: tuple[int, int] = (7, 7),
        layerdrop_rate: FloatLike | None = None,
    ):
        super().__init__()
        self.padding = ((kernel_size[0] - 1) // 2, (kernel_size[1] - 1) // 2)
        hidden_channels = channels * hidden_ratio
        self.layerdrop_rate = ScheduledFloat((0.0, 0.2), (20000.0, 0.015)) if layerdrop_rate is None else layerdrop_rate
        self.depthwise_conv = nn.Conv2d(channels, channels, kernel_size, padding=self.padding, groups=channels)
        self.pointwise_conv1 = nn.Conv2d(channels, hidden_channels, kernel_size=1)
        self.hidden_balancer = Balancer(
            hidden_channels, channel_dim=1, min_positive=0.3, max_positive=1.0, min_abs=0.75, max_abs=5.0
        )
        self.activation = SwooshL()
        self.pointwise_conv2 = nn.Conv2d(hidden_channels, channels, kernel_size=1)
        with torch.no_grad():
            self.pointwise_conv2.weight.mul_(0.01)
            if self.pointwise_conv2.bias is not None:
                nn.init.uniform_(self.pointwise_conv2.bias, -0.001, 0.001)
        self.out_balancer = Balancer(
            channels, channel_dim=1, min_positive=0.4, max_positive=0.6, min_abs=1.0, max_abs=6.0
        )
        self.out_whiten = Whiten(num_groups=1, whitening_limit=5.0, prob=(0.025, 0.25), grad_scale=0.01)

    def forward(self, x: Tensor) -> Tensor:
        """x: (batch, channels, time, freq)."""
        if not self.training:
            return self._forward_eval(x)
        bypass = x
        x = self.depthwise_conv(x)
        x = self.pointwise_conv1(x)
        x = self.activation(self.hidden_balancer(x))
        x = self.pointwise_conv2(x)
        if self.training:
            layerdrop_rate = float(self.layerdrop_rate)
            if layerdrop_rate != 0.0:
                keep = torch.rand((x.shape[0], 1, 1, 1), dtype=x.dtype, device=x.device) > layerdrop_rate
                x = x * keep
        x = self.out_balancer(bypass + x)
        if x.requires_grad:
            x = self.out_whiten(x.transpose(1, 3)).transpose(1, 3)
        return x

    def _forward_eval(self, x: Tensor) -> Tensor:
        # The 1x1 convolutions run as matrix products over channels-last data, the residual
        # sum as part of the second (see kernels.linear); on channels-last input (the front
        # end's inference path) no layout changes at all.
        h = self.depthwise_conv(x).permute(0, 2, 3, 1)  # (batch, time, freq, channels)
        conv1, conv2 = self.pointwise_conv1, self.pointwise_conv2
        h = swoosh_feedforward(
            h, conv1.weight, conv1.bias, "SwooshL", conv2.weight, conv2.bias, residual=x.permute(0, 2, 3, 1)
        )
        return h.permute(0, 3, 1, 2)


class Conv2dSubsampling(nn.Module):
    """(batch, T, in_channels) -> (batch, (T - 7) // 2, out_channels).

    Three 2-D convs (the second halves time and frequency, the third frequency again), a
    ConvNeXt block, then a linear map of the flattened (channels x freq) to `out_channels`.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        layer1_channels: int = 8,
        layer2_channels: int = 32,
        layer3_channels: int = 128,
        dropout: FloatLike = 0.1,
    ) -> None:
        super().__init__()
        assert in_channels >= 7, in_channels
        # The indices of the convolutions (0, 4, 7) are part of the checkpoint keys.
        self.conv = nn.Sequential(
            nn.Conv2d(1, layer1_channels, kernel_size=3, padding=(0, 1)),
            ScaleGrad(0.2),
            Balancer(layer1_channels, channel_dim=1, max_abs=1.0),
            SwooshR(),
            nn.Conv2d(layer1_channels, layer2_channels, kernel_size=3, stride=2, padding=0),
            Balancer(layer2_channels, channel_dim=1, max_abs=4.0),
            SwooshR(),
            nn.Conv2d(layer2_channels, layer3_channels, kernel_size=3, stride=(1, 2)),
            Balancer(layer3_channels, channel_dim=1, max_abs=4.0),
            SwooshR(),
        )
        self.convnext = ConvNeXt(layer3_channels, kernel_size=(7, 7))
        self.out_width = (((in_channels - 1) // 2) - 1) // 2
        self.layer3_channels = layer3_channels
        self.out = Linear(self.out_width * layer3_channels, out_channels)
        self.out_whiten = Whiten(
            num_groups=1,
            whitening_limit=ScheduledFloat((0.0, 4.0), (20000.0, 8.0), default=4.0),
            prob=(0.025, 0.25),
            grad_scale=0.02,
        )
        self.out_norm = BiasNorm(out_channels)
        self.dropout = Dropout3(dropout, shared_dim=1)

    def forward(self, x: Tensor, x_lens: Tensor) -> tuple[Tensor, Tensor]:
        """x: (batch, T, in_channels) with T >= MIN_FEATURE_FRAMES."""
        if x.shape[1] < MIN_FEATURE_FRAMES:
            raise ValueError(
                f"input of {x.shape[1]} feature frames is too short: at least {MIN_FEATURE_FRAMES} "
                "(about 0.1 s) are needed"
            )
        x = x.unsqueeze(1)  # (batch, 1, time, freq)
        if self.training or is_exporting():
            x = self.convnext(self.conv(x) if self.training else self._conv_eval(x))
            batch_size, channels, time, freq = x.shape
            x = self.out(x.transpose(1, 2).reshape(batch_size, time, channels * freq))
        else:
            x = self._channels_last_eval(x)
        x = self.out_whiten(x)
        x = self.out_norm(x)
        x = self.dropout(x)
        x_lens = (x_lens - 7) // 2
        return x, x_lens

    def _channels_last_eval(self, x: Tensor) -> Tensor:
        """Inference: convs, ConvNeXt and the output map on channels-last data, where oneDNN's
        convolutions need no reordering and the (channels x freq) flattening is a view, read
        by `out` with its weight's columns put in (freq, channels) order. The same sums."""
        x = self.convnext(self._conv_eval(x.contiguous(memory_format=torch.channels_last)))
        batch_size, channels, time, freq = x.shape
        x = x.permute(0, 2, 3, 1).reshape(batch_size, time, freq * channels)
        weight = self.out.weight.reshape(-1, channels, freq).transpose(1, 2).reshape(-1, freq * channels)
        return linear(x, weight, self.out.bias)

    def _conv_eval(self, x: Tensor) -> Tensor:
        """`self.conv` without its training-only steps, each SwooshR's shift and constant
        folded into the neighbouring convolutions' biases."""
        conv1, conv2, conv3 = (cast(nn.Conv2d, self.conv[k]) for k in (0, 4, 7))
        x = F.conv2d(x, conv1.weight, shifted_bias(conv1.bias, "SwooshR"), padding=conv1.padding)
        # From one input channel PyTorch cannot tell channels-last from contiguous and returns
        # the latter; the rest of the front end runs channels-last only if asked here.
        x = x.contiguous(memory_format=torch.channels_last)
        shift = SWOOSH_SHIFT["SwooshR"]
        x = conv_after_swoosh(x, "SwooshR", conv2, output_shift=shift)
        x = conv_after_swoosh(x, "SwooshR", conv3, output_shift=shift)
        return swoosh_from_shifted(x, "SwooshR")
