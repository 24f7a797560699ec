"""The benchmarks that compare with the original ZIPA code: benchmarks/vs_original.py skips
cleanly without a checkout, its k2 SwooshL/SwooshR stand-in follows the formulas, and
benchmarks/encoder.py carries no hard-coded timings of the original."""

import subprocess
import sys

import pytest
import torch
from conftest import REPO, load_benchmark

from zipa.model import kernels
from zipa.model.scaling import SwooshL, SwooshR

BENCHMARKS = REPO / "benchmarks"


@pytest.fixture(scope="module")
def vs_original():
    return load_benchmark("vs_original")


def test_vs_original_skips_without_checkout():
    result = subprocess.run(
        [sys.executable, str(BENCHMARKS / "vs_original.py")], check=False, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert "skipped" in result.stdout and "--zipa-dir" in result.stdout


def test_vs_original_skips_for_missing_dir(vs_original, tmp_path, capsys):
    assert vs_original.main(["--zipa-dir", str(tmp_path / "absent")]) == 0
    assert "skipped" in capsys.readouterr().out


@pytest.mark.parametrize(
    "name, shift, offset", [("swoosh_l", 4.0, 0.035), ("swoosh_r", 1.0, 0.313261687)]
)
def test_swoosh_stand_in_matches_formula(vs_original, name, shift, offset):
    x = torch.cat([torch.linspace(-200.0, 200.0, 40001), torch.tensor([-1e30, -1e6, 1e6, 1e30, 88.0, 89.0])])
    x = x.float()
    k2 = vs_original.fake_k2_module()
    x64 = x.double()
    # log(1 + exp(x - shift)) in float64 without overflow ...
    expected = torch.logaddexp(torch.zeros_like(x64), x64 - shift) - 0.08 * x64 - offset
    # ... which for moderate x is literally the formula:
    small = x64.abs() < 30
    assert torch.allclose(
        expected[small], torch.log(1 + torch.exp(x64[small] - shift)) - 0.08 * x64[small] - offset, rtol=0, atol=1e-12
    )
    for fn in (getattr(k2, name), getattr(k2, name + "_forward")):
        y = fn(x)
        assert y.dtype == torch.float32 and torch.isfinite(y).all()
        tol = 1e-6 * (1 + expected.abs())
        assert ((y.double() - expected).abs() <= tol).all()
    ours = (SwooshL if name == "swoosh_l" else SwooshR)()(x)
    assert ((ours.double() - expected).abs() <= 1e-6 * (1 + expected.abs())).all()


def test_fake_k2_has_only_what_it_implements(vs_original):
    k2 = vs_original.fake_k2_module()
    with pytest.raises(AttributeError):
        _ = k2.rnnt_loss_pruned
    with pytest.raises(NotImplementedError):
        k2.swoosh_l_forward_and_deriv(torch.zeros(2))


def test_encoder_benchmark_has_no_hard_coded_original_timings():
    source = (BENCHMARKS / "encoder.py").read_text()
    for stale in ("ORIGINAL_SECONDS", "MATMUL_GFLOP", "ISSUE_GFLOPS_RATE", "0.97", "3.65", "140.0"):
        assert stale not in source, stale
    result = subprocess.run(
        [sys.executable, str(BENCHMARKS / "encoder.py"), "--help"], check=False, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert "--no-floor" in result.stdout and "--baseline-matmul" not in result.stdout


def test_floor_rates_are_measured_and_flops_counted_through_onednn_products():
    floor = load_benchmark("floor")
    rates = floor.matmul_rates(torch.device("cpu"), n=128, warmup_seconds=0.01, repeats=2)
    assert set(rates) == ({"default", "onednn"} if kernels.onednn_available() else {"default"})
    assert all(rate > 0 for rate in rates.values())

    class OneProduct:
        """forward_encoder = one product that inference sends to oneDNN where it can."""

        def forward_encoder(self, feats, lens):
            return kernels.linear(feats, torch.ones(48, 80)), lens

    # 2 x (7 * 100) rows x 80 inputs x 48 outputs, though FlopCounterMode cannot see oneDNN's op
    assert floor.encoder_flops(OneProduct(), torch.randn(7, 100, 80), torch.tensor([100])) == 2 * 700 * 80 * 48


def test_vs_original_help_flags():
    result = subprocess.run(
        [sys.executable, str(BENCHMARKS / "vs_original.py"), "--help"], check=False, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0
    for flag in ("--zipa-dir", "--icefall-dir", "--presets", "--batch-sizes", "--seconds", "--rounds"):
        assert flag in result.stdout


@pytest.fixture(scope="module")
def modules_benchmark():
    return load_benchmark("modules")


def test_modules_benchmark_skips_without_checkout(modules_benchmark, tmp_path, capsys):
    assert modules_benchmark.main([]) == 0
    assert modules_benchmark.main(["--zipa-dir", str(tmp_path / "absent")]) == 0
    assert capsys.readouterr().out.count("skipped") == 2


def test_modules_benchmark_groups_both_naming_schemes(modules_benchmark):
    group_of = modules_benchmark.group_of
    assert group_of("encoder_embed") == group_of("Conv2dSubsampling") == "front end"
    assert group_of("encoder.encoders.0.layers.1.feed_forward3") == "feed-forward"
    assert group_of("Zipformer2.encoders.2.encoder.layers.0.feed_forward1") == "feed-forward"
    assert group_of("encoder.encoders.0.layers.0.self_attn_weights") == "attention weights"
    assert group_of("encoder.encoders.0.layers.0.self_attn2") == "attention x values"
    assert group_of("encoder.encoders.0.layers.0.bypass_mid") == group_of("encoder.encoders.0.layers.0.bypass")
    # inside a group or around the groups: counted by the group, or in "rest"
    for name in ("encoder.encoders.0.layers.0.feed_forward1.in_proj", "encoder_embed.convnext",
                 "encoder.encoders.1.downsample", "encoder.encoders.0.layers.0", "Zipformer2"):
        assert group_of(name) is None, name


def test_modules_benchmark_counts_each_groups_flops(modules_benchmark):
    from zipa.model.asr_model import build_model
    from zipa.model.config import preset

    floor = load_benchmark("floor")
    config = preset("tiny")
    model = build_model(config).eval()
    frames = 200
    flops = modules_benchmark.group_flops(floor.flops_by_module(model, torch.randn(1, frames, 80), torch.tensor([frames])))
    embedded = (frames - 7) // 2
    # each feed-forward module: two products, d x h and h x d, per frame of its stack
    expected = sum(
        layers * 4 * ((embedded + ds - 1) // ds) * d * sum((ff * 3 // 4, ff, ff * 5 // 4))
        for layers, ds, ff, d in zip(
            config.num_encoder_layers, config.downsampling_factor, config.feedforward_dim, config.encoder_dim
        )
    )
    assert flops["feed-forward"] == expected
    assert sum(v for k, v in flops.items() if k != "Global") == flops["Global"]
    groups_with_products = ("front end", "attention weights", "non-linear attention", "attention x values",
                            "convolution modules")
    assert all(flops[g] > 0 for g in groups_with_products) and flops["rest"] >= 0


def test_modules_benchmark_puts_time_in_the_module_that_took_it(modules_benchmark, monkeypatch):
    import time

    from zipa.model.asr_model import build_model
    from zipa.model.config import preset

    model = build_model(preset("tiny")).eval()
    slow = model.encoder.encoders[0].layers[0].conv_module1
    forward = slow.forward

    def slow_forward(*args, **kwargs):
        time.sleep(0.05)
        return forward(*args, **kwargs)

    monkeypatch.setattr(slow, "forward", slow_forward)
    timed = modules_benchmark.TimedModules(model)
    feats, lens = torch.randn(1, 200, 80), torch.tensor([200])
    with torch.inference_mode():
        for _ in range(3):
            timed.forward_encoder(feats, lens)
    times = modules_benchmark.median_group_times(timed, skip=1)
    assert times["convolution modules"] >= 0.05
    assert all(t < 0.05 for g, t in times.items() if g != "convolution modules"), times
    layers = sum(preset("tiny").num_encoder_layers)
    assert timed.calls == {
        "front end": 1, "feed-forward": 3 * layers, "attention weights": layers, "non-linear attention": layers,
        "attention x values": 2 * layers, "convolution modules": 2 * layers, "bypasses": 2 * layers, "norms": layers,
    }  # fmt: skip
