"""Reduced-precision inference (an opt-in fast mode, not exact).

`LowPrecisionModel` holds a CTC `AsrModel` converted to bfloat16 (or float16 on CUDA) behind the
float32 interface the inference code uses (`forward_encoder`, `ctc_output`, `use_ctc`,
`encoder`): features go in as float32, encoder outputs and log-probs come out as float32. On a
CPU with AVX512-BF16 (or AMX) the encoder runs about 1.5-1.6x faster than this project's
float32 at 30 s (2.7-3.1x the original's; benchmarks/vs_original.py --bf16); the cost on the
demo model is a PER change within ±0.1 points and 90-91 % of hypotheses identical to float32's
(benchmarks/fast_modes.py, README "Performance"). `zipa transcribe|align|evaluate|serve
--precision bf16` uses it. Use it as

    from zipa.model.precision import LowPrecisionModel
    transcriber = Transcriber.from_checkpoint(path, aligner=None)
    transcriber.model = LowPrecisionModel(transcriber.model)          # bfloat16

Transducer models are not supported (their search mixes decoder and joiner calls).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

if TYPE_CHECKING:
    from zipa.model.asr_model import AsrModel


class LowPrecisionModel(nn.Module):
    """`model` (converted in place) in `dtype`, with float32 inputs and outputs."""

    def __init__(self, model: AsrModel, dtype: torch.dtype = torch.bfloat16):
        super().__init__()
        if not getattr(model, "use_ctc", False):
            raise ValueError("LowPrecisionModel: only CTC models are supported")
        if dtype not in (torch.bfloat16, torch.float16):
            raise ValueError(f"LowPrecisionModel: dtype must be bfloat16 or float16, not {dtype}")
        self.inner = model.to(dtype)
        self.dtype = dtype

    @property
    def use_ctc(self) -> bool:
        return True

    @property
    def encoder(self) -> nn.Module:
        return self.inner.encoder

    def forward_encoder(self, x: Tensor, x_lens: Tensor):
        out, out_lens = self.inner.forward_encoder(x.to(self.dtype), x_lens)
        return out.float(), out_lens

    def ctc_output(self, encoder_out: Tensor) -> Tensor:
        return self.inner.ctc_output(encoder_out.to(self.dtype)).float()
