"""--print-diagnostics: statistics of every module's activations and gradients over a few batches.

As icefall's `diagnostics`: hooks record, for each module, its output and the gradient of the
loss with respect to that output, and for each parameter its value and gradient; after the
first `DIAGNOSTIC_BATCHES` training batches the table is printed and training stops. Each row
gives a tensor's shape and, accumulated over the batches, the mean, the root mean square, the
minimum and maximum, and the share of (near-)zero entries: a module whose activations explode,
vanish or die shows up there.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch.nn as nn
from torch import Tensor

DIAGNOSTIC_BATCHES = 5


@dataclass
class Stats:
    shape: tuple = ()
    count: int = 0
    total: float = 0.0
    squares: float = 0.0
    zeros: int = 0
    low: float = math.inf
    high: float = -math.inf

    def add(self, x: Tensor) -> None:
        x = x.detach().float()
        self.shape = tuple(x.shape)
        self.count += x.numel()
        self.total += x.sum().item()
        self.squares += x.square().sum().item()
        self.zeros += int((x.abs() < 1e-8).sum().item())
        if x.numel():
            self.low, self.high = min(self.low, x.min().item()), max(self.high, x.max().item())

    def row(self, name: str, kind: str) -> str:
        n = max(self.count, 1)
        rms = math.sqrt(self.squares / n)
        return (
            f"module={name}, type={kind}, dim={self.shape}, mean={self.total / n:.4g}, rms={rms:.4g}, "
            f"min={self.low:.4g}, max={self.high:.4g}, zeros={self.zeros / n:.3f}"
        )


@dataclass
class Diagnostics:
    """Hooks on `model` that gather `Stats`; `table()` lists them."""

    model: nn.Module
    stats: dict[str, Stats] = field(default_factory=dict)
    handles: list = field(default_factory=list)

    def __post_init__(self) -> None:
        for name, module in self.model.named_modules():
            self.handles.append(module.register_forward_hook(self._hook(name or "model")))

    def _hook(self, name: str):
        def record(_module, _inputs, outputs):
            tensors = [
                t
                for t in (outputs if isinstance(outputs, tuple) else (outputs,))
                if isinstance(t, Tensor) and t.is_floating_point()
            ]
            for index, tensor in enumerate(tensors):
                suffix = f"[{index}]" if len(tensors) > 1 else ""
                self._get(f"{name}\toutput{suffix}").add(tensor)
                if tensor.requires_grad:  # the gradient of the loss with respect to this output
                    tensor.register_hook(self._get(f"{name}\tgrad{suffix}").add)

        return record

    def _get(self, key: str) -> Stats:
        return self.stats.setdefault(key, Stats())

    def record_parameters(self) -> None:
        """Add the parameters' values and gradients (call after each backward pass)."""
        for name, param in self.model.named_parameters():
            self._get(f"{name}\tparam_value").add(param)
            if param.grad is not None:
                self._get(f"{name}\tparam_grad").add(param.grad)

    def table(self) -> str:
        for handle in self.handles:
            handle.remove()
        return "\n".join(stats.row(*key.split("\t")) for key, stats in self.stats.items())
