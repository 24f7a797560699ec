"""--print-diagnostics: per-module statistics of activations and gradients (icefall's
diagnostics), checked against float64 sums over the same tensors, and the recipe flag end to end."""

import math
import re

import pytest
import torch
import torch.nn as nn
from training_utils import make_tiny_corpus, training_flags

from zipa.data import module as data_module
from zipa.train.diagnostics import DIAGNOSTIC_BATCHES, Diagnostics
from zipa.train.recipe import ZIPA_MODEL_DEFAULTS, run_training


def _row_values(row: str) -> dict:
    return {k: float(v) for k, v in re.findall(r"(mean|rms|min|max|zeros)=([-\d.e+]+)", row)}


def test_statistics_equal_float64_sums_over_the_batches():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU())
    diagnostics = Diagnostics(model)
    outputs, grads, inputs = [], [], [torch.randn(5, 4), torch.randn(2, 4)]
    for x in inputs:
        out = model(x)
        out.retain_grad()
        (out * torch.arange(1.0, 4.0)).sum().backward()
        outputs.append(out.detach().double().flatten())
        grads.append(out.grad.double().flatten())
        diagnostics.record_parameters()
    rows = {tuple(re.match(r"module=(\S+), type=(\S+),", r).groups()): r for r in diagnostics.table().splitlines()}
    for kind, values in (("output", torch.cat(outputs)), ("grad", torch.cat(grads))):
        got = _row_values(rows[("1", kind)])  # the ReLU, module "1" of the Sequential
        assert got["mean"] == pytest.approx(values.mean().item(), rel=1e-3, abs=1e-6)
        assert got["rms"] == pytest.approx(math.sqrt(values.square().mean().item()), rel=1e-3)
        assert (got["min"], got["max"]) == pytest.approx((values.min().item(), values.max().item()), rel=1e-3, abs=1e-6)
        assert got["zeros"] == pytest.approx((values.abs() < 1e-8).double().mean().item(), abs=1e-3)
    weight_grad = _row_values(rows[("0.weight", "param_grad")])
    assert weight_grad["rms"] > 0 and ("model", "output") in rows


def test_print_diagnostics_trains_a_few_batches_then_prints_and_stops(tmp_path):
    corpus = make_tiny_corpus(tmp_path / "corpus", num_train=40)
    exp = tmp_path / "exp"
    run_training("test", data_module.AsrDataModule, 1, ZIPA_MODEL_DEFAULTS, {},
                 argv=training_flags(corpus, exp, "--use-ctc", "True", "--use-transducer", "False",
                                     "--max-duration", "2", "--print-diagnostics", "True"))
    log = "".join(p.read_text() for p in (exp / "log").iterdir())
    assert f"diagnostics over the first {DIAGNOSTIC_BATCHES} batches" in log
    for kind in ("output", "grad", "param_value", "param_grad"):
        assert re.search(rf"module=encoder\.encoders\.0\S*, type={kind}, dim=", log), kind
    assert not list(exp.glob("epoch-*.pt")) and not list(exp.glob("checkpoint-*.pt"))
