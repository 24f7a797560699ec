"""The inference-only fast paths compute what the training path (or a float64 formula) computes,
and the speed scripts (benchmarks/profile_encoder.py, gpu_throughput.py, fast_modes.py) run end
to end on a tiny configuration (no timings are asserted)."""

import contextlib
import json
import time

import pytest
import torch
from conftest import load_benchmark, rel_l2

from zipa.model import kernels
from zipa.model import zipformer as zipformer_module
from zipa.model.zipformer import MASKED_SCORE, ConvolutionModule, RelPositionMultiheadAttentionWeights

needs_onednn = pytest.mark.skipif(not kernels.onednn_available(), reason="oneDNN products unavailable here")


@pytest.fixture
def forced(monkeypatch):
    """forced(kernel): every product class takes `kernel` (ZIPA_KERNELS) until the test ends."""

    def force(kernel):
        monkeypatch.setenv("ZIPA_KERNELS", kernel)
        kernels.reset()

    yield force
    monkeypatch.delenv("ZIPA_KERNELS", raising=False)
    kernels.reset()


@pytest.fixture
def kernel_cache(monkeypatch, tmp_path):
    """The per-machine cache in a temporary folder; choices measured afresh."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.delenv("ZIPA_KERNELS", raising=False)
    kernels.reset()
    yield tmp_path / "zipa" / "kernels.json"
    kernels.reset()


class FakeKernels:
    """Candidates that take the given seconds on a fake clock (no real timing, no flakiness)."""

    def __init__(self, **seconds):
        self.now = 0.0
        self.candidates = {name: self._taking(t) for name, t in seconds.items()}

    def _taking(self, seconds):
        def run():
            self.now += seconds

        return run

    def clock(self):
        return self.now


@pytest.mark.parametrize("slow, fast", [("default", "onednn"), ("onednn", "default")])
def test_fastest_picks_the_faster_of_two_fakes(slow, fast):
    fakes = FakeKernels(**{slow: 0.004, fast: 0.001})
    name, seconds = kernels.fastest(fakes.candidates, rounds=3, clock=fakes.clock)
    assert name == fast
    assert seconds == pytest.approx({slow: 0.004, fast: 0.001})


def test_fastest_keeps_the_reference_unless_the_other_wins_by_the_margin():
    # 3 % faster is within the 5 % margin: PyTorch's default (the first candidate) stays
    fakes = FakeKernels(default=0.0100, onednn=0.0097)
    assert kernels.fastest(fakes.candidates, rounds=3, clock=fakes.clock)[0] == "default"
    fakes = FakeKernels(default=0.0100, onednn=0.0094)
    assert kernels.fastest(fakes.candidates, rounds=3, clock=fakes.clock)[0] == "onednn"

    def broken():
        raise RuntimeError("no such kernel on this CPU")

    name, seconds = kernels.fastest({"default": lambda: None, "onednn": broken}, rounds=2)
    assert name == "default" and set(seconds) == {"default"}


@needs_onednn
def test_choice_measures_once_per_machine_and_honours_the_override(monkeypatch, kernel_cache):
    timed = []

    def fake_candidates(cls, dtype):
        timed.append((cls, dtype))
        reference, other = kernels.CANDIDATES[cls]
        slow, fast = (reference, other) if cls in ("linear", "depthwise") else (other, reference)
        return {reference: None, other: None} | {slow: lambda: time.sleep(0.005), fast: lambda: None}

    monkeypatch.setattr(kernels, "_candidates", fake_candidates)
    assert kernels.choice("linear", torch.float32) == "onednn"
    assert kernels.choice("looped", torch.float32) == "default"
    assert kernels.choice("depthwise", torch.float32) == "height"
    assert kernels.choice("linear", torch.float32) == "onednn"  # once per process
    assert timed == [("linear", torch.float32), ("looped", torch.float32), ("depthwise", torch.float32)]
    cached = json.loads(kernel_cache.read_text())["machines"][kernels.machine_key()]
    assert cached == {"linear/float32": "onednn", "looped/float32": "default", "depthwise/float32": "height"}

    kernels.reset()  # a new process on the same machine: from the cache, nothing timed
    assert kernels.choice("linear", torch.float32) == "onednn" and len(timed) == 3
    assert kernels.choice("depthwise", torch.float32) == "height" and len(timed) == 3
    with torch.inference_mode():
        assert kernels._takes_onednn("linear", torch.ones(2, 3), torch.ones(4, 3))
        assert not kernels._takes_onednn("looped", torch.ones(2, 3), torch.ones(4, 3))
    for kernel in ("default", "onednn"):  # the override beats cache and measurement
        monkeypatch.setenv("ZIPA_KERNELS", kernel)
        kernels.reset()
        assert kernels.choice("linear", torch.float32) == kernels.choice("looped", torch.float32) == kernel
        assert kernels.choice("depthwise", torch.float32) == "height"  # a layout, not a product kernel
    assert len(timed) == 3
    monkeypatch.setenv("ZIPA_KERNELS", "measure")  # measures again and replaces the cached choice
    kernels.reset()
    assert kernels.choice("linear", torch.float32) == "onednn" and len(timed) == 4
    monkeypatch.setenv("ZIPA_KERNELS", "mkl")
    kernels.reset()
    with pytest.raises(ValueError, match="ZIPA_KERNELS"):
        kernels.choice("linear", torch.float32)


@needs_onednn
def test_linear_takes_onednn_only_without_gradients_and_matches_float64(forced):
    forced("onednn")
    torch.manual_seed(0)
    x, weight, bias = torch.randn(300, 7, 96), torch.randn(130, 96), torch.randn(130)
    expected = torch.nn.functional.linear(x.double(), weight.double(), bias.double())
    with torch.inference_mode():
        assert kernels._takes_onednn("linear", x, weight)
        assert rel_l2(kernels.linear(x, weight, bias), expected) < 1e-6
        assert rel_l2(kernels.linear(x.transpose(0, 1), weight), expected.transpose(0, 1) - bias.double()) < 1e-6
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert kernels.linear(x, weight, bias).dtype == torch.bfloat16  # autocast sees the product
    weight.requires_grad_(True)
    assert not kernels._takes_onednn("linear", x, weight)  # training: PyTorch's op, which has a backward
    kernels.linear(x, weight, bias).sum().backward()
    assert torch.allclose(weight.grad, x.reshape(-1, 96).sum(0).expand(130, 96), rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("kernel", ["default", "onednn"])
@pytest.mark.parametrize("with_bias, with_residual", [(True, True), (True, False), (False, True), (False, False)])
def test_linear_into_writes_rows_of_a_larger_output_like_float64(forced, kernel, with_bias, with_residual):
    if kernel == "onednn" and not kernels.onednn_available():
        pytest.skip("oneDNN products unavailable here")
    forced(kernel)
    torch.manual_seed(0)
    x, weight, bias, residual = torch.randn(40, 24), torch.randn(16, 24), torch.randn(16), torch.randn(40, 16)
    expected = x.double() @ weight.double().t()
    expected += bias.double() if with_bias else 0.0
    expected += residual.double() if with_residual else 0.0
    out = torch.full((100, 16), 7.0)
    with torch.inference_mode():
        kernels.linear_into(out[30:70], x, weight, bias if with_bias else None, residual if with_residual else None)
    assert rel_l2(out[30:70], expected) < 1e-6
    assert torch.all(out[:30] == 7.0) and torch.all(out[70:] == 7.0)  # nothing else written


@pytest.mark.parametrize("with_bias, with_residual", [(True, True), (False, True), (True, False), (False, False)])
def test_linear_into_under_bfloat16_products_writes_what_linear_returns(with_bias, with_residual):
    """Inside products_in(bfloat16), linear_into writes the rows `linear` returns (the same
    rounding of the same operands, bias and residual added in float32) and nothing else."""
    torch.manual_seed(0)
    x, weight, bias, residual = torch.randn(40, 24), torch.randn(16, 24), torch.randn(16), torch.randn(40, 16)
    bias, residual = (bias if with_bias else None), (residual if with_residual else None)
    out = torch.full((100, 16), 7.0)
    with torch.inference_mode(), kernels.products_in(torch.bfloat16):
        kernels.linear_into(out[30:70], x, weight, bias, residual)
        expected = kernels.linear(x, weight, bias, residual)
    assert torch.equal(out[30:70], expected)
    assert torch.all(out[:30] == 7.0) and torch.all(out[70:] == 7.0)
    exact = x.double() @ weight.double().t()
    assert rel_l2(out[30:70] - (0.0 if bias is None else bias) - (0.0 if residual is None else residual), exact) > 1e-4


def test_products_in_bfloat16_round_the_operands_and_keep_the_sums_float32():
    """Inside products_in(bfloat16): x and W rounded to bfloat16, their product (rounded to
    bfloat16 once) plus bias and residual in float32; the weight's copy is made once and made
    again when the parameter changes."""
    torch.manual_seed(0)
    layer = torch.nn.Linear(64, 32)
    x, residual = torch.randn(50, 64), torch.randn(50, 32) * 100  # a large residual: float32 keeps its digits
    with torch.inference_mode(), kernels.products_in(torch.bfloat16):
        out = kernels.linear(x, layer.weight, layer.bias, residual)
        copy = kernels._low_precision_weight(layer.weight, torch.bfloat16)
        assert kernels._low_precision_weight(layer.weight, torch.bfloat16) is copy  # cached
    product = x.bfloat16().double() @ layer.weight.detach().bfloat16().double().t()
    expected = product + layer.bias.detach().double() + residual.double()
    assert out.dtype == torch.float32
    # bfloat16 rounding of the product only (8 bits: 2^-9 relative), none of the residual's
    assert torch.all((out.double() - expected).abs() <= product.abs() * 2**-8 + 1e-4)
    exact = x.double() @ layer.weight.detach().double().t()
    assert rel_l2(out - residual - layer.bias.detach(), exact) > 1e-4  # the product did run in bfloat16
    with torch.no_grad():
        layer.weight.mul_(2.0)
    with torch.inference_mode(), kernels.products_in(torch.bfloat16):
        doubled = kernels.linear(x, layer.weight, layer.bias)
    assert rel_l2(doubled, 2 * product + layer.bias.detach().double()) < 1e-2
    assert len(layer.weight.__dict__["_low_precision_copies"]) == 1  # the stale copy replaced, not kept
    with torch.inference_mode():
        assert rel_l2(kernels.linear(x, layer.weight), x.double() @ layer.weight.detach().double().t()) < 1e-6


def test_bfloat16_products_are_per_thread():
    """A float32 model running in another thread while one thread is inside products_in stays
    exact."""
    import threading

    torch.manual_seed(0)
    x, weight = torch.randn(40, 64), torch.randn(32, 64)
    exact = x.double() @ weight.double().t()
    inside, other_done = threading.Event(), threading.Event()
    results = {}

    def other_thread():
        inside.wait()
        with torch.inference_mode():
            results["other"] = kernels.linear(x, weight)
        other_done.set()

    thread = threading.Thread(target=other_thread)
    thread.start()
    with torch.inference_mode(), kernels.products_in(torch.bfloat16):
        inside.set()
        other_done.wait(timeout=30)
        results["this"] = kernels.linear(x, weight)
    thread.join()
    assert rel_l2(results["other"], exact) < 1e-6
    assert rel_l2(results["this"], exact) > 1e-4


def test_softplus_by_exp_and_log_matches_float64_over_the_whole_float32_range():
    from zipa.model.scaling import _softplus_by_exp_log

    torch.manual_seed(0)
    extremes = [-3e38, -200.0, -87.0, -30.0, -17.0, 0.0, 20.0, 69.0, 69.1, 88.0, 88.8, 100.0, 1e30, 3e38]
    t = torch.cat([torch.tensor(extremes), torch.randn(10000) * 8, torch.linspace(60.0, 95.0, 1001)])
    expected = torch.nn.functional.softplus(t.double())
    actual = _softplus_by_exp_log(t)
    assert torch.isfinite(actual).all()
    # within float32 rounding of the result (and of 1 + exp(t) where exp(t) < 2^-24)
    assert torch.all((actual.double() - expected).abs() <= 6e-8 + 2.4e-7 * expected.abs())
    special = _softplus_by_exp_log(torch.tensor([float("inf"), float("-inf"), float("nan")]))
    assert special[0] == float("inf") and special[1] == 0.0 and torch.isnan(special[2])


def test_softplus_by_exp_and_log_never_computes_a_subnormal_exp():
    # subnormal floats take a slow microcode path on x86 (~200x per element): the exp pass must
    # never produce one, however negative the input
    from torch.overrides import TorchFunctionMode

    from zipa.model.scaling import _softplus_by_exp_log

    exp_outputs = []

    class RecordExp(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            if func in (torch.exp, torch.Tensor.exp, torch.Tensor.exp_):
                exp_outputs.append(out.clone())
            return out

    t = torch.cat([torch.linspace(-110.0, -80.0, 3001), torch.tensor([-3e38, -200.0, 0.0, 100.0])])
    with RecordExp():
        actual = _softplus_by_exp_log(t)
    assert exp_outputs, "no exp pass seen"
    smallest_normal = torch.finfo(torch.float32).tiny
    assert all(bool(((out == 0) | (out.abs() >= smallest_normal)).all()) for out in exp_outputs)
    assert torch.all((actual.double() - torch.nn.functional.softplus(t.double())).abs() <= 6e-8)


@pytest.mark.parametrize("activation", ["SwooshL", "SwooshR"])
@pytest.mark.parametrize("band_bytes", [1 << 40, 3000])  # one band / bands of 64 rows, the last one shorter
def test_swoosh_feedforward_in_bands_matches_float64(monkeypatch, activation, band_bytes):
    from zipa.model import scaling

    monkeypatch.setattr(scaling, "_FEEDFORWARD_BAND_BYTES_PER_THREAD", band_bytes // torch.get_num_threads())
    torch.manual_seed(0)
    x, residual = torch.randn(150, 1, 20) * 3, torch.randn(150, 1, 12)
    w1, b1, w2, b2 = torch.randn(48, 20), torch.randn(48), torch.randn(12, 48), torch.randn(12)
    swoosh = {"SwooshL": (4.0, 0.035), "SwooshR": (1.0, 0.313261687)}[activation]
    h = torch.nn.functional.linear(x.double(), w1.double(), b1.double())
    h = torch.nn.functional.softplus(h - swoosh[0]) - 0.08 * h - swoosh[1]
    expected = torch.nn.functional.linear(h, w2.double(), b2.double()) + residual.double()
    with torch.inference_mode():
        actual = scaling.swoosh_feedforward(x, w1, b1, activation, w2, b2, residual)
        unbiased = scaling.swoosh_feedforward(x, w1, b1, activation, w2, None)
    assert actual.shape == (150, 1, 12)
    assert rel_l2(actual, expected) < 1e-6
    assert rel_l2(unbiased, expected - residual.double() - b2.double()) < 1e-6


def test_feedforward_bands_are_a_cache_size_and_at_least_twice_the_input_width(monkeypatch):
    """Bands hold about 1 MiB of hidden activations per thread, but never fewer rows than twice
    the input width, where re-reading the weights for each band would cost more than it saves."""
    from zipa.model import scaling

    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    assert scaling.feedforward_band_rows(192, 640, 4) == (2 << 20) // (640 * 4)  # small model, first stack
    assert scaling.feedforward_band_rows(1024, 2560, 4) == 2048  # large model, middle stack
    assert scaling.feedforward_band_rows(16, 1 << 20, 4) == 64  # never thinner than 64 rows


def test_depthwise_convolution_gets_standard_strides_at_batch_one(monkeypatch):
    """(T, 1, C).transpose(0, 1) is contiguous with stride C on its batch dimension, which sends
    oneDNN down a path 10-16x slower (Intel Xeon): the convolution must see T * C there."""
    seen = []
    conv2d = torch.nn.functional.conv2d

    def spy(x, *args, **kwargs):
        seen.append(x.stride())
        return conv2d(x, *args, **kwargs)

    monkeypatch.setattr(kernels.F, "conv2d", spy)
    torch.manual_seed(0)
    x, weight, bias = torch.randn(50, 1, 8).transpose(0, 1).contiguous(), torch.randn(8, 1, 5), torch.randn(8)
    assert x.stride()[0] == 8  # the odd stride this guards against
    expected = torch.nn.functional.conv1d(
        x.transpose(1, 2).double(), weight.double(), bias.double(), padding=2, groups=8
    )
    with torch.inference_mode():
        for layout in ("width", "height"):
            actual = kernels._depthwise(x, weight, bias, 2, layout)
            assert rel_l2(actual, expected) < 1e-6
    assert [stride[0] for stride in seen] == [50 * 8, 50 * 8]


def test_front_end_runs_channels_last_after_its_first_convolution():
    """The first convolution has one input channel, where PyTorch cannot tell channels-last from
    contiguous: its output must be made channels-last, or every later step reorders."""
    from zipa.model.subsampling import Conv2dSubsampling

    torch.manual_seed(0)
    front = Conv2dSubsampling(80, 64, dropout=0.0).eval()
    seen = []
    front.convnext.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    x = torch.randn(1, 60, 80)
    with torch.inference_mode():
        out, _ = front(x, torch.tensor([60]))
    front.train()
    expected, _ = front(x, torch.tensor([60]))  # the training path, no layout tricks
    assert seen[0].is_contiguous(memory_format=torch.channels_last) and not seen[0].is_contiguous()
    assert rel_l2(out, expected.detach()) < 1e-5


@pytest.mark.parametrize("kernel", ["default", "onednn"])  # one batched product / a loop of oneDNN products
def test_batched_matmul_matches_float64(monkeypatch, forced, kernel):
    monkeypatch.setattr(kernels, "_MIN_MACS_PER_LOOPED_PRODUCT", 0)
    forced(kernel)
    torch.manual_seed(0)
    a, b = torch.randn(4, 3, 50, 61), torch.randn(4, 3, 61, 12)
    with torch.inference_mode():
        actual = kernels.batched_matmul(a, b.transpose(-1, -2).contiguous().transpose(-1, -2))
    assert actual.shape == (4, 3, 50, 12)
    assert rel_l2(actual, torch.matmul(a.double(), b.double())) < 1e-6


def _attention_weights_float64(module, x, pos_emb, key_padding_mask, attn_mask):
    """softmax over j of q_i . k_j + p_i . pos[j - i + T - 1], written out index by index."""
    T, B, _ = x.shape
    H, dq, dp = module.num_heads, module.query_head_dim, module.pos_head_dim
    proj = torch.nn.functional.linear(x.double(), module.in_proj.weight.double(), module.in_proj.bias.double())
    q = proj[..., : H * dq].reshape(T, B, H, dq)
    k = proj[..., H * dq : 2 * H * dq].reshape(T, B, H, dq)
    p = proj[..., 2 * H * dq :].reshape(T, B, H, dp)
    pos = (pos_emb[0].double() @ module.linear_pos.weight.double().t()).reshape(2 * T - 1, H, dp)
    offsets = torch.arange(T).unsqueeze(0) - torch.arange(T).unsqueeze(1) + T - 1  # [i, j] = j - i + T - 1
    scores = torch.einsum("ibhd,jbhd->hbij", q, k) + torch.einsum("ibhd,ijhd->hbij", p, pos[offsets])
    scores = scores.masked_fill(key_padding_mask[None, :, None, :], MASKED_SCORE)
    scores = scores.masked_fill(attn_mask, MASKED_SCORE)
    return scores.softmax(dim=-1)


# all heads and utterances at once / one head and utterance at a time in bands of 13 rows (the last one shorter)
@pytest.mark.parametrize("band_bytes", [1 << 40, 2000])
def test_attention_weights_by_bands_match_float64_formula(monkeypatch, band_bytes):
    monkeypatch.setattr(zipformer_module, "_BAND_BYTES_PER_THREAD", band_bytes // torch.get_num_threads())
    torch.manual_seed(0)
    T, B = 37, 3
    module = RelPositionMultiheadAttentionWeights(48, pos_dim=16, num_heads=3, query_head_dim=8, pos_head_dim=4).eval()
    x, pos_emb = torch.randn(T, B, 48), torch.randn(1, 2 * T - 1, 16)
    mask = torch.zeros(B, T, dtype=torch.bool)
    mask[1, 30:] = True
    mask[2, 20:] = True
    chunks = torch.arange(T) // 10  # streaming-style: each frame sees its own chunk and the one before
    attn_mask = (chunks.unsqueeze(0) > chunks.unsqueeze(1)) | (chunks.unsqueeze(0) < chunks.unsqueeze(1) - 1)
    with torch.inference_mode():
        actual = module(x, pos_emb, key_padding_mask=mask, attn_mask=attn_mask)
    assert actual.shape == (3, B, T, T)
    assert rel_l2(actual, _attention_weights_float64(module, x, pos_emb, mask, attn_mask)) < 1e-5


def test_encoder_layers_share_one_attention_buffer_per_thread_and_compute_the_same(monkeypatch):
    """The layers' attention weights go to one buffer kept per thread (no fresh tens of MB per
    layer): the same buffer from layer to layer and call to call, a new one for a longer input
    or outside inference mode, and the encoder's output exactly what it is without the buffer."""
    from zipa.model.asr_model import build_model
    from zipa.model.config import preset

    torch.manual_seed(0)
    model = build_model(preset("tiny")).eval()
    feats, lens = torch.randn(2, 300, 80), torch.tensor([300, 220])
    seen = []
    band_path = zipformer_module._attention_weights_by_bands

    def spy(*args):
        weights = band_path(*args)
        buffer = getattr(zipformer_module._thread_storage, "weights", None)
        seen.append(buffer is not None and weights.untyped_storage().data_ptr() == buffer.untyped_storage().data_ptr())
        return weights

    monkeypatch.setattr(zipformer_module, "_attention_weights_by_bands", spy)
    with torch.inference_mode():
        reused = model.forward_encoder(feats, lens)[0]
        model.forward_encoder(feats, lens)
    assert len(seen) > 2 and all(seen)  # every layer's weights in the thread's buffer
    like = torch.ones(1)
    with torch.inference_mode():
        first = zipformer_module._reused_weights_storage(100, like)
        assert zipformer_module._reused_weights_storage(50, like).data_ptr() == first.data_ptr()
        assert zipformer_module._reused_weights_storage(200, like).numel() == 200  # grown
    with torch.no_grad():  # an inference tensor cannot be written outside inference mode
        plain = zipformer_module._reused_weights_storage(50, like)
        assert not plain.is_inference()
        plain.fill_(1.0)
    monkeypatch.setattr(zipformer_module, "_MAX_REUSED_WEIGHTS", 0)  # every layer allocates
    seen.clear()
    with torch.inference_mode():
        fresh = model.forward_encoder(feats, lens)[0]
    assert torch.equal(reused, fresh) and not any(seen)


@needs_onednn
def test_encoder_with_and_without_onednn_products_agree(tmp_path_factory, forced):
    from tiny_models import speechlike, tiny_model_path

    from zipa.audio.features import compute_fbank
    from zipa.model.io import load_model

    model, _ = load_model(tiny_model_path(tmp_path_factory, "ctc"))
    feats, lens = compute_fbank([speechlike(6, seed=11), speechlike(4, seed=12)])
    forced("onednn")
    outputs = {}
    for onednn in (True, False):
        with torch.inference_mode(), contextlib.nullcontext() if onednn else kernels.default_kernels():
            out, out_lens = model.forward_encoder(feats, lens)
            outputs[onednn] = (out, model.ctc_output(out).argmax(-1), out_lens)
    with torch.inference_mode():
        assert kernels._takes_onednn("linear", feats[0], feats[0])  # back on after the block
    (out_a, ids_a, lens_a), (out_b, ids_b, lens_b) = outputs[True], outputs[False]
    assert torch.equal(lens_a, lens_b)
    for i, n in enumerate(lens_a.tolist()):
        assert rel_l2(out_a[i, :n], out_b[i, :n]) < 1e-5
        assert torch.equal(ids_a[i, :n], ids_b[i, :n])


@pytest.mark.parametrize("batch, kernel, layout", [(1, 31, "width"), (1, 31, "height"), (3, 15, "width")])
def test_conv_module_channels_last_eval_path_matches_training_path(monkeypatch, batch, kernel, layout):
    monkeypatch.setitem(kernels._choices, ("depthwise", torch.float32, torch.get_num_threads()), layout)
    torch.manual_seed(0)
    module = ConvolutionModule(64, kernel, causal=False)
    with torch.no_grad():
        module.depthwise_conv.bias.uniform_(-0.5, 0.5)
    x = torch.randn(57, batch, 64)
    mask = torch.zeros(batch, 57, dtype=torch.bool)
    mask[-1, 40:] = batch > 1
    module.train()
    expected = module(x, src_key_padding_mask=mask)  # dropout p = 0: the plain formulas
    module.eval()
    with torch.inference_mode():
        actual = module(x, src_key_padding_mask=mask)
    assert actual.shape == expected.shape
    assert rel_l2(actual, expected.detach()) < 1e-5  # measured ~1e-6: float sums in another order


def test_profile_encoder_runs(capsys):
    profile = load_benchmark("profile_encoder")
    assert profile.main(["--presets", "tiny", "--seconds", "2", "--rounds", "1", "--top", "3"]) == 0
    out = capsys.readouterr().out
    for bucket in ("matmul", "conv", "softmax", "elementwise", "copy"):
        assert bucket in out
    assert f"CPU: {kernels.cpu_model()}" in out and "products: " in out  # every figure names its CPU
    assert profile.bucket_of("aten::addmm") == "matmul" and profile.bucket_of("aten::_softmax") == "softmax"


def test_gpu_throughput_smoke_on_cpu(capsys):
    bench = load_benchmark("gpu_throughput")
    assert (
        bench.main(
            [
                "--preset",
                "tiny",
                "--device",
                "cpu",
                "--num-utts",
                "5",
                "--min-seconds",
                "1",
                "--max-seconds",
                "3",
                "--max-batch-seconds",
                "7",
                "--threads",
                "1",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "hours/hour" in out and "fp32" in out and "bf16" in out
    assert f"CPU: {kernels.cpu_model()}" in out


def test_bypass_eval_path_under_autocast_gives_the_float32_sum():
    """Under autocast a layer's output arrives in bfloat16 beside a float32 residual: the eval
    path (one lerp) returns the training formula's promoted float32 sum, not an error."""
    torch.manual_seed(0)
    bypass = zipformer_module.BypassModule(8).eval()
    with torch.no_grad():
        bypass.bypass_scale.uniform_(0.1, 0.9)
    src_orig = torch.randn(5, 2, 8)
    src = torch.randn(5, 2, 8).to(torch.bfloat16)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = bypass(src_orig, src)
    expected = src_orig.double() + (src.double() - src_orig.double()) * bypass.bypass_scale.double()
    assert out.dtype == torch.float32
    torch.testing.assert_close(out.double(), expected, rtol=1e-6, atol=1e-6)


def test_fast_modes_runs_every_cpu_mode_on_a_tiny_model(tmp_path, tmp_path_factory, capsys):
    from tiny_models import tiny_model_path
    from training_utils import make_tiny_corpus

    bench = load_benchmark("fast_modes")
    corpus = make_tiny_corpus(tmp_path / "corpus", num_train=2, num_dev=3)
    model = tiny_model_path(tmp_path_factory, "ctc")
    assert bench.main(["--model", str(model), "--shar-dirs", str(corpus["dev"]), "--batch-size", "2"]) == 0
    out = capsys.readouterr().out
    for mode in bench.CPU_MODES:
        assert mode in out


def test_sorted_batches_pack_by_padded_seconds():
    bench = load_benchmark("gpu_throughput")
    audio = [torch.zeros(int(s * bench.RATE)).numpy() for s in (1, 5, 2, 4, 3)]
    batches = bench.sorted_batches(audio, max_batch_seconds=8, max_batch_size=10)
    assert sorted(i for b in batches for i in b) == list(range(5))
    for b in batches:
        lengths = [len(audio[i]) / bench.RATE for i in b]
        assert lengths == sorted(lengths, reverse=True)
        assert len(b) == 1 or len(b) * lengths[0] <= 8
