"""Both recipes learn: a tiny model's loss falls on a small espeak-ng demo corpus, and the
CR-CTC loss equals its definition computed directly in float64."""

import re

import pytest
import torch
import torch.nn.functional as F
from training_utils import TINY_MODEL_FLAGS

from zipa.data import module as data_module
from zipa.data.demo_corpus import DemoCorpusConfig, build_demo_corpus
from zipa.model.asr_model import build_model, make_pad_mask
from zipa.model.config import ModelConfig
from zipa.train.recipe import run_training


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    config = DemoCorpusConfig(languages=("es", "sw"), heldout=("id",), num_dev=2, num_test=2,
                              max_sentences=10, train_renderings=2)
    build_demo_corpus(out, config)
    return out


def _losses(log_dir):
    text = "".join(p.read_text() for p in log_dir.iterdir())
    return [float(v) for v in re.findall(r"batch \d+: .*? loss=([0-9.]+)", text)]


@pytest.mark.slow
@pytest.mark.parametrize("recipe", ["transducer", "ctc"])
def test_tiny_model_loss_falls_on_demo_speech(demo, tmp_path, recipe):
    transducer = recipe == "transducer"
    flags = [
        *TINY_MODEL_FLAGS, "--train-shar-dirs", str(demo / "train"), "--exp-dir", str(tmp_path),
        "--max-duration", "12", "--num-workers", "0", "--device", "cpu", "--tensorboard", "False",
        "--log-interval", "3", "--num-epochs", "30", "--base-lr", "0.05", "--ref-duration", "12",
        "--schedule-speedup", "10", "--warm-step", "20", "--seed", "3",
    ]
    run_training(
        "test", data_module.AsrDataModule, 2 if transducer else 1,
        model_defaults=dict(use_ctc=not transducer, use_transducer=transducer),
        training_defaults=dict(use_cr_ctc=False, enable_spec_aug=False),
        argv=flags,
    )
    losses = _losses(tmp_path / "log")
    assert len(losses) >= 6, losses
    assert sum(losses[-3:]) / 3 < 0.8 * sum(losses[:2]) / 2, losses


def test_cr_ctc_loss_equals_float64_definition():
    torch.manual_seed(0)
    config = ModelConfig(num_encoder_layers=(1, 1), downsampling_factor=(1, 2), feedforward_dim=(64, 96),
                         num_heads=(2, 2), encoder_dim=(32, 48), query_head_dim=(8,), value_head_dim=(4,),
                         pos_dim=16, encoder_unmasked_dim=(24, 24), cnn_module_kernel=(31, 31))
    model = build_model(config).eval()
    n, t = 2, 12
    encoder_out = torch.randn(2 * n, t, 48)
    lens = torch.tensor([12, 9, 12, 9])
    targets = torch.tensor([5, 6, 7, 8, 9] * 2)
    target_lens = torch.tensor([3, 2, 3, 2])
    time_mask = (torch.rand(2 * n, t, 1) > 0.6).float()
    ctc, cr = model.forward_cr_ctc(encoder_out, lens, targets, target_lens, time_mask, cr_loss_masked_scale=2.5)

    log_probs = model.ctc_output(encoder_out).double()
    other = torch.cat([log_probs[n:], log_probs[:n]])
    expected_cr = 0.0
    for b in range(2 * n):
        for frame in range(int(lens[b])):
            p, q = log_probs[b, frame], other[b, frame]
            kl = (q.exp() * (q - p)).sum()  # KL(other || this), the other view detached
            expected_cr += kl * (2.5 if time_mask[b, frame, 0] > 0 else 1.0)
    expected_ctc = sum(
        F.ctc_loss(log_probs[b, : lens[b]].unsqueeze(1), targets[sum(target_lens[:b]) : sum(target_lens[: b + 1])].unsqueeze(0),
                   lens[b : b + 1], target_lens[b : b + 1], reduction="sum")
        for b in range(2 * n)
    )
    assert abs(cr.item() - expected_cr.item()) < 1e-4 * abs(expected_cr.item())
    assert abs(ctc.item() - expected_ctc.item()) < 1e-4 * abs(expected_ctc.item())
    assert make_pad_mask(lens, t).sum() == 6
