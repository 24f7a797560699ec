"""Reduced-precision inference (an opt-in fast mode, not exact).

`LowPrecisionModel` holds a CTC `AsrModel` behind the float32 interface the inference code uses
(`forward_encoder`, `ctc_output`, `use_ctc`, `encoder`): features go in as float32, encoder
outputs and log-probs come out as float32. Two ways:

* `products_only=True` (CPU; `--precision bf16`): the float32 model whose products run in
  bfloat16 on AMX / AVX512-BF16 (`zipa.model.kernels.products_in`), the rest float32: encoder
  output rel. L2 ~7e-4 from float32; on an Intel Xeon at 30 s 1.25-1.7x our float32 (1.6-2.6x
  the original's);
* the whole model converted to bfloat16 (or float16 on CUDA; `--precision bf16-full`, and
  `bf16` on CUDA): rel. L2 ~4e-2, on the Xeon 1.6-2.4x our float32 (2.0-3.7x the original's).

On the demo model the products-only mode keeps >= 90 % of greedy hypotheses identical to
float32's on every test set (Festival's held-out voices included), the whole model 63-94 %
(benchmarks/fast_modes.py, README "Performance"). Use it as

    from zipa.model.precision import LowPrecisionModel
    transcriber = Transcriber.from_checkpoint(path, aligner=None)
    transcriber.model = LowPrecisionModel(transcriber.model, products_only=True)

Transducer models are not supported (their search mixes decoder and joiner calls).
`reduced_precision` is what the CLI calls: it converts only where the device has a unit that
computes bfloat16 products (AMX or AVX512-BF16 on x86 CPUs, a CUDA GPU); elsewhere bfloat16
products are emulated, slower than float32, so it says so and keeps the float32 model.
"""

from __future__ import annotations

import warnings
from typing import cast

import torch
from torch import Tensor, nn

from zipa.model.kernels import cpu_flags, products_in
from zipa.model.protocols import EncoderModel


def bf16_unit(device: torch.device) -> str | None:
    """The unit that computes bfloat16 products on `device` ("AMX-BF16", "AVX512-BF16",
    "CUDA"), or None where there is none."""
    if device.type == "cuda":
        return "CUDA" if torch.cuda.is_bf16_supported() else None
    flags = cpu_flags()
    for flag, unit in (("amx_bf16", "AMX-BF16"), ("avx512_bf16", "AVX512-BF16")):
        if flag in flags:
            return unit
    return None


def reduced_precision(
    model: nn.Module, dtype: torch.dtype, device: torch.device, whole_model: bool = False
) -> nn.Module:
    """`LowPrecisionModel(model, dtype, ...)`, or `model` itself (float32, with a warning) where
    `dtype` is bfloat16 and `device` has no bfloat16 unit (`bf16_unit`). On a CPU only the
    products run in `dtype` unless `whole_model` (faster, about 50x further from float32); on
    CUDA, whose elementwise kernels are as fast in 16 bits, the whole model always does."""
    if dtype == torch.bfloat16 and bf16_unit(device) is None:
        warnings.warn(
            f"bf16: this {device.type.upper()} has no bfloat16 product unit (AMX, AVX512-BF16 or CUDA), where "
            "bfloat16 runs slower than float32: running float32",
            stacklevel=2,
        )
        return model
    return LowPrecisionModel(model, dtype, products_only=device.type == "cpu" and not whole_model)


class LowPrecisionModel(nn.Module):
    """`model` in `dtype`, with float32 inputs and outputs: the whole model converted in place
    (`products_only=False`), or (`products_only=True`, CPU) the float32 model whose products
    run in `dtype` (`zipa.model.kernels.products_in`)."""

    def __init__(self, model: nn.Module, dtype: torch.dtype = torch.bfloat16, products_only: bool = False):
        super().__init__()
        if not getattr(model, "use_ctc", False):
            raise ValueError("LowPrecisionModel: only CTC models are supported")
        if dtype not in (torch.bfloat16, torch.float16):
            raise ValueError(f"LowPrecisionModel: dtype must be bfloat16 or float16, not {dtype}")
        self.inner = model if products_only else model.to(dtype)
        self.dtype = dtype
        self.products_only = products_only

    @property
    def use_ctc(self) -> bool:
        return True

    @property
    def encoder(self) -> nn.Module:
        return cast(nn.Module, self.inner.encoder)

    def forward_encoder(self, x: Tensor, x_lens: Tensor):
        # `inner` is a CTC AsrModel, an EncoderModel (tests/test_protocols.py).
        if self.products_only:
            with products_in(self.dtype):
                return cast(EncoderModel, self.inner).forward_encoder(x, x_lens)
        out, out_lens = cast(EncoderModel, self.inner).forward_encoder(x.to(self.dtype), x_lens)
        return out.float(), out_lens

    def ctc_output(self, encoder_out: Tensor) -> Tensor:
        if self.products_only:
            return cast(EncoderModel, self.inner).ctc_output(encoder_out)
        return cast(EncoderModel, self.inner).ctc_output(encoder_out.to(self.dtype)).float()
