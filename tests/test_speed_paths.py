"""The inference-only fast paths compute what the training path computes, and the speed scripts
(benchmarks/profile_encoder.py, gpu_throughput.py, fast_modes.py) run end to end on a tiny
configuration (no timings are asserted)."""


import pytest
import torch
from conftest import load_benchmark, rel_l2

from zipa.model.zipformer import ConvolutionModule


@pytest.mark.parametrize("batch, kernel", [(1, 31), (3, 15)])
def test_conv_module_channels_last_eval_path_matches_training_path(batch, kernel):
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
    assert profile.bucket_of("aten::addmm") == "matmul" and profile.bucket_of("aten::_softmax") == "softmax"


def test_gpu_throughput_smoke_on_cpu(capsys):
    bench = load_benchmark("gpu_throughput")
    assert bench.main(["--preset", "tiny", "--device", "cpu", "--num-utts", "5", "--min-seconds", "1",
                       "--max-seconds", "3", "--max-batch-seconds", "7", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert "hours/hour" in out and "fp32" in out and "bf16" in out


def test_sorted_batches_pack_by_padded_seconds():
    bench = load_benchmark("gpu_throughput")
    audio = [torch.zeros(int(s * bench.RATE)).numpy() for s in (1, 5, 2, 4, 3)]
    batches = bench.sorted_batches(audio, max_batch_seconds=8, max_batch_size=10)
    assert sorted(i for b in batches for i in b) == list(range(5))
    for b in batches:
        lengths = [len(audio[i]) / bench.RATE for i in b]
        assert lengths == sorted(lengths, reverse=True)
        assert len(b) == 1 or len(b) * lengths[0] <= 8
