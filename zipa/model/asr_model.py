"""AsrModel: conv front end + Zipformer2 + CTC head and/or transducer (decoder, joiner).

Attribute names, and so state_dict keys, are icefall's: `encoder_embed`, `encoder`,
`ctc_output`, `decoder`, `joiner`, `simple_am_proj`, `simple_lm_proj`, `attention_decoder`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from zipa.model.config import ModelConfig
from zipa.model.decoder import Decoder, Joiner
from zipa.model.kernels import Linear
from zipa.model.scaling import ScheduledFloat, scaled_linear
from zipa.model.spec_augment import SpecAugment, downsample_time_mask
from zipa.model.subsampling import Conv2dSubsampling
from zipa.model.zipformer import Zipformer2

if TYPE_CHECKING:
    from zipa.model.attention_decoder import AttentionDecoderModel


def make_pad_mask(lengths: Tensor, max_len: int = 0) -> Tensor:
    """(batch, max_len) bool, True at padded positions."""
    max_len = max(max_len, int(lengths.max()))
    return torch.arange(max_len, device=lengths.device).unsqueeze(0) >= lengths.unsqueeze(1)


class AsrModel(nn.Module):
    """The network of both recipes. For search and inference it is a
    `zipa.model.protocols.EncoderModel`, with the `CtcHead` when `use_ctc` and the
    `TransducerHead` when `use_transducer`."""

    def __init__(
        self,
        encoder_embed: Conv2dSubsampling,
        encoder: Zipformer2,
        decoder: Decoder | None = None,
        joiner: Joiner | None = None,
        attention_decoder: AttentionDecoderModel | None = None,
        encoder_dim: int = 384,
        decoder_dim: int = 512,
        vocab_size: int = 500,
        use_transducer: bool = True,
        use_ctc: bool = False,
        use_attention_decoder: bool = False,
    ):
        super().__init__()
        if not (use_transducer or use_ctc):
            raise ValueError("at least one of use_transducer and use_ctc must be True")
        self.encoder_embed = encoder_embed
        self.encoder = encoder
        self.use_transducer = use_transducer
        if use_transducer:
            assert decoder is not None and joiner is not None
            self.decoder = decoder
            self.joiner = joiner
            self.simple_am_proj = scaled_linear(encoder_dim, vocab_size, initial_scale=0.25)
            self.simple_lm_proj = scaled_linear(decoder_dim, vocab_size, initial_scale=0.25)
        self.use_ctc = use_ctc
        if use_ctc:
            self.ctc_output = nn.Sequential(nn.Dropout(p=0.1), Linear(encoder_dim, vocab_size), nn.LogSoftmax(dim=-1))
        self.use_attention_decoder = use_attention_decoder
        if use_attention_decoder:
            assert attention_decoder is not None
            self.attention_decoder = attention_decoder

    def forward_encoder(self, x: Tensor, x_lens: Tensor) -> tuple[Tensor, Tensor]:
        """x: (batch, T, 80) fbank, zero-padded; x_lens: (batch,).

        Returns encoder_out (batch, T', encoder_dim) and encoder_out_lens (batch,).
        """
        x, x_lens = self.encoder_embed(x, x_lens)
        if bool((x_lens <= 0).any()):
            raise ValueError(f"input too short for the encoder: feature lengths {x_lens.tolist()}")
        # Without padding the mask changes nothing: skip its work.
        padding_mask = make_pad_mask(x_lens, x.shape[1]) if bool((x_lens < x.shape[1]).any()) else None
        encoder_out, encoder_out_lens = self.encoder(x.permute(1, 0, 2), x_lens, padding_mask)
        return encoder_out.permute(1, 0, 2), encoder_out_lens

    def forward_ctc(
        self, encoder_out: Tensor, encoder_out_lens: Tensor, targets: Tensor, target_lengths: Tensor
    ) -> Tensor:
        """CTC loss summed over the batch; targets concatenated (sum(target_lengths),)."""
        log_probs = self.ctc_output(encoder_out)
        return ctc_loss_sum(log_probs, encoder_out_lens, targets, target_lengths)

    def forward_cr_ctc(
        self,
        encoder_out: Tensor,
        encoder_out_lens: Tensor,
        targets: Tensor,
        target_lengths: Tensor,
        time_mask: Tensor | None = None,
        cr_loss_masked_scale: float = 1.0,
    ) -> tuple[Tensor, Tensor]:
        """CR-CTC on a batch holding two augmented views (rows [view1; view2]).

        Returns (CTC loss summed over both views, consistency loss): the KL divergence of each
        view's posteriors from the other's detached posteriors, scaled by `cr_loss_masked_scale`
        at frames that `time_mask` (2N, T, 1) marks as masked, summed over valid frames.
        """
        log_probs = self.ctc_output(encoder_out)
        ctc_loss = ctc_loss_sum(log_probs, encoder_out_lens, targets, target_lengths)
        first, second = log_probs.detach().chunk(2, dim=0)
        swapped = torch.cat([second, first], dim=0)
        cr_loss = F.kl_div(input=log_probs, target=swapped, reduction="none", log_target=True)
        if time_mask is not None:
            cr_loss = cr_loss * (time_mask * (cr_loss_masked_scale - 1) + 1)
        padding = make_pad_mask(encoder_out_lens, cr_loss.shape[1]).unsqueeze(-1)
        return ctc_loss, cr_loss.masked_fill(padding, 0.0).sum()

    def forward_transducer(
        self,
        encoder_out: Tensor,
        encoder_out_lens: Tensor,
        y: list[list[int]],
        prune_range: int = 5,
        am_scale: float = 0.0,
        lm_scale: float = 0.0,
    ) -> tuple[Tensor, Tensor]:
        """(simple loss, pruned loss), both summed over the batch: the smoothed 'simple' RNN-T
        loss on linear projections gives the pruning bounds for the joiner's loss."""
        from zipa.losses import rnnt

        device = encoder_out.device
        blank_id = self.decoder.blank_id
        y_lens = torch.tensor([len(seq) for seq in y], dtype=torch.int64, device=device)
        y_padded = _pad(y, 0, device)
        decoder_out = self.decoder(_pad([[blank_id] + seq for seq in y], blank_id, device))
        boundary = torch.zeros((encoder_out.shape[0], 4), dtype=torch.int64, device=device)
        boundary[:, 2] = y_lens
        boundary[:, 3] = encoder_out_lens
        lm = self.simple_lm_proj(decoder_out)
        am = self.simple_am_proj(encoder_out)
        with torch.autocast(device.type, enabled=False):
            simple_loss, (px_grad, py_grad) = rnnt.rnnt_loss_smoothed(
                lm=lm.float(),
                am=am.float(),
                symbols=y_padded,
                termination_symbol=blank_id,
                lm_only_scale=lm_scale,
                am_only_scale=am_scale,
                boundary=boundary,
                reduction="sum",
                return_grad=True,
            )
        ranges = rnnt.get_rnnt_prune_ranges(px_grad=px_grad, py_grad=py_grad, boundary=boundary, s_range=prune_range)
        am_pruned, lm_pruned = rnnt.do_rnnt_pruning(
            am=self.joiner.encoder_proj(encoder_out), lm=self.joiner.decoder_proj(decoder_out), ranges=ranges
        )
        logits = self.joiner(am_pruned, lm_pruned, project_input=False)
        with torch.autocast(device.type, enabled=False):
            pruned_loss = rnnt.rnnt_loss_pruned(
                logits=logits.float(),
                symbols=y_padded,
                ranges=ranges,
                termination_symbol=blank_id,
                boundary=boundary,
                reduction="sum",
            )
        return simple_loss, pruned_loss

    def forward(
        self,
        x: Tensor,
        x_lens: Tensor,
        y: list[list[int]],
        prune_range: int = 5,
        am_scale: float = 0.0,
        lm_scale: float = 0.0,
        use_cr_ctc: bool = False,
        use_spec_aug: bool = False,
        spec_augment: SpecAugment | None = None,
        supervision_segments: Tensor | None = None,
        time_warp_factor: int | None = 80,
        cr_loss_masked_scale: float = 1.0,
    ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """Training losses of a batch: (simple, pruned, ctc, attention_decoder, cr), each
        summed over utterances; the heads the model lacks give empty tensors.

        x: (N, T, 80) fbank; x_lens: (N,); y: token ids per utterance. With `use_cr_ctc` the
        batch is duplicated into two views (SpecAugment'ed independently when `use_spec_aug`,
        after a shared time warp) and every loss is halved, as in ZIPA's recipe.
        """
        assert x.ndim == 3 and x_lens.ndim == 1 and x.shape[0] == x_lens.shape[0] == len(y)
        empty = torch.empty(0)
        time_mask = None
        if use_cr_ctc:
            assert self.use_ctc, "CR-CTC needs the CTC head"
            if use_spec_aug:
                assert spec_augment is not None and supervision_segments is not None
                if time_warp_factor is not None and time_warp_factor >= 1:
                    x, _ = SpecAugment(time_warp_factor=time_warp_factor, num_feature_masks=0, num_frame_masks=0)(
                        x, supervision_segments
                    )
                x, frame_mask = spec_augment(x.repeat(2, 1, 1))
                time_mask = downsample_time_mask(frame_mask, self.encoder.output_downsampling_factor).to(x.dtype)
            else:
                x = x.repeat(2, 1, 1)
            x_lens = x_lens.repeat(2)
            y = y + y
        encoder_out, encoder_out_lens = self.forward_encoder(x, x_lens)
        view_scale = 0.5 if use_cr_ctc else 1.0

        simple_loss = pruned_loss = empty
        if self.use_transducer:
            simple_loss, pruned_loss = self.forward_transducer(
                encoder_out, encoder_out_lens, y, prune_range=prune_range, am_scale=am_scale, lm_scale=lm_scale
            )
            simple_loss, pruned_loss = simple_loss * view_scale, pruned_loss * view_scale

        ctc_loss = cr_loss = empty
        if self.use_ctc:
            targets = torch.tensor([t for seq in y for t in seq], dtype=torch.int64)
            target_lens = torch.tensor([len(seq) for seq in y], dtype=torch.int64)
            if use_cr_ctc:
                ctc_loss, cr_loss = self.forward_cr_ctc(
                    encoder_out,
                    encoder_out_lens,
                    targets,
                    target_lens,
                    time_mask=time_mask,
                    cr_loss_masked_scale=cr_loss_masked_scale,
                )
                ctc_loss, cr_loss = ctc_loss * 0.5, cr_loss * 0.5
            else:
                ctc_loss = self.forward_ctc(encoder_out, encoder_out_lens, targets, target_lens)

        attention_decoder_loss = empty
        if self.use_attention_decoder:
            attention_decoder_loss = (
                self.attention_decoder.calc_att_loss(
                    encoder_out=encoder_out,
                    encoder_out_lens=encoder_out_lens,
                    ys=y,
                    ys_lens=torch.tensor([len(seq) for seq in y], device=encoder_out.device),
                )
                * view_scale
            )
        return simple_loss, pruned_loss, ctc_loss, attention_decoder_loss, cr_loss


def _pad(sequences: list[list[int]], value: int, device: torch.device) -> Tensor:
    width = max((len(seq) for seq in sequences), default=0)
    return torch.tensor([seq + [value] * (width - len(seq)) for seq in sequences], dtype=torch.int64, device=device)


def ctc_loss_sum(log_probs: Tensor, lengths: Tensor, targets: Tensor, target_lengths: Tensor) -> Tensor:
    """torch CTC loss (blank 0, summed, infinite losses zeroed) on (batch, T, vocab) log-probs."""
    return F.ctc_loss(
        log_probs=log_probs.permute(1, 0, 2),
        targets=targets.cpu(),
        input_lengths=lengths.cpu(),
        target_lengths=target_lengths.cpu(),
        reduction="sum",
        zero_infinity=True,
    )


def zipformer2_kwargs(config: ModelConfig, scheduled_float=ScheduledFloat) -> dict[str, Any]:
    """The Zipformer2 constructor arguments of `config`, as the recipes' get_encoder_model passes
    them (also used to build the original's Zipformer2, with its own ScheduledFloat, in
    benchmarks/vs_original.py)."""
    return dict(
        output_downsampling_factor=config.output_downsampling_factor,
        downsampling_factor=config.downsampling_factor,
        num_encoder_layers=config.num_encoder_layers,
        encoder_dim=config.encoder_dim,
        encoder_unmasked_dim=config.encoder_unmasked_dim,
        query_head_dim=config.query_head_dim,
        pos_head_dim=config.pos_head_dim,
        value_head_dim=config.value_head_dim,
        pos_dim=config.pos_dim,
        num_heads=config.num_heads,
        feedforward_dim=config.feedforward_dim,
        cnn_module_kernel=config.cnn_module_kernel,
        dropout=scheduled_float((0.0, 0.3), (20000.0, 0.1)),
        warmup_batches=4000.0,
        causal=config.causal,
        chunk_size=config.chunk_size,
        left_context_frames=config.left_context_frames,
    )


def build_model(config: ModelConfig) -> AsrModel:
    """An AsrModel with the architecture described by `config` (random weights)."""
    dropout = ScheduledFloat((0.0, 0.3), (20000.0, 0.1))
    encoder_embed = Conv2dSubsampling(
        in_channels=config.feature_dim, out_channels=config.encoder_dim[0], dropout=dropout
    )
    encoder = Zipformer2(**zipformer2_kwargs(config))
    decoder = joiner = attention_decoder = None
    if config.use_transducer:
        decoder = Decoder(config.vocab_size, config.decoder_dim, config.blank_id, config.context_size)
        joiner = Joiner(config.max_encoder_dim, config.decoder_dim, config.joiner_dim, config.vocab_size)
    if config.use_attention_decoder:
        from zipa.model.attention_decoder import AttentionDecoderModel

        attention_decoder = AttentionDecoderModel(
            vocab_size=config.vocab_size,
            decoder_dim=config.attention_decoder_dim,
            num_decoder_layers=config.attention_decoder_num_layers,
            attention_dim=config.attention_decoder_attention_dim,
            num_heads=config.attention_decoder_num_heads,
            feedforward_dim=config.attention_decoder_feedforward_dim,
            memory_dim=config.max_encoder_dim,
            sos_id=config.sos_id,
            eos_id=config.eos_id,
        )
    return AsrModel(
        encoder_embed=encoder_embed,
        encoder=encoder,
        decoder=decoder,
        joiner=joiner,
        attention_decoder=attention_decoder,
        encoder_dim=config.max_encoder_dim,
        decoder_dim=config.decoder_dim,
        vocab_size=config.vocab_size,
        use_transducer=config.use_transducer,
        use_ctc=config.use_ctc,
        use_attention_decoder=config.use_attention_decoder,
    )
