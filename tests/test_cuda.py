"""On a GPU: mixed-precision training steps, and the pruned RNN-T loss and decoding against the CPU.

Every test here is marked `cuda` and skipped where no GPU is visible (see conftest.py); run them
alone with `pytest -m cuda`.
"""

import math

import pytest
import torch
from conftest import PARITY, rel_l2
from torch import nn
from training_utils import make_tiny_corpus, training_flags

from zipa.data import module as data_module
from zipa.losses import do_rnnt_pruning, get_rnnt_prune_ranges, rnnt_loss_pruned, rnnt_loss_smoothed
from zipa.train.distributed import DistInfo
from zipa.train.loop import Trainer
from zipa.train.recipe import training_parser

pytestmark = pytest.mark.cuda

# (model defaults, training defaults, output_downsampling_factor) of the two recipes.
RECIPES = {
    "crctc": (dict(use_ctc=True, use_transducer=False), dict(use_cr_ctc=True, enable_spec_aug=False), 1),
    "transducer": (dict(use_ctc=False, use_transducer=True), dict(use_cr_ctc=False), 2),
}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_tiny_corpus(tmp_path_factory.mktemp("corpus"))


# --------------------------------------------------------------------------------------------
# AMP training steps through the Trainer


def _trainer_and_batches(corpus, exp_dir, recipe: str, *flags: str):
    model_defaults, training_defaults, factor = RECIPES[recipe]
    parser = training_parser("test", data_module.AsrDataModule, model_defaults, training_defaults)
    args = parser.parse_args(training_flags(corpus, exp_dir, "--device", "cuda", *flags))
    data = data_module.AsrDataModule(args, world_size=1, rank=0, output_downsampling_factor=factor,
                                     ctc=model_defaults["use_ctc"])
    trainer = Trainer(args, DistInfo(), data, output_downsampling_factor=factor)
    loader = data.train_dataloaders(data.train_cuts())
    loader.sampler.set_epoch(0)
    batches = [batch for _, batch in zip(range(4), loader)]
    return trainer, batches * 2  # 8 steps: room for the grad scaler to back off from 2**16


def _linear_output_dtypes(model: nn.Module) -> set:
    """Record the dtypes that the model's Linear layers produce (autocast shows up there)."""
    seen = set()
    for module in model.modules():
        if isinstance(module, nn.Linear):
            module.register_forward_hook(lambda _m, _i, out: seen.add(out.dtype))
    return seen


def _train(trainer, batches):
    before = {k: v.detach().clone() for k, v in trainer.raw_model.named_parameters()}
    infos = []
    for batch in batches:
        trainer.batch_idx_train += 1
        infos.append(trainer.train_step(batch, None))
    return before, infos


def _assert_trained(trainer, before, infos):
    assert infos and all("skipped" not in info for info in infos), infos
    assert all(math.isfinite(info["loss"]) for info in infos), infos
    after = dict(trainer.raw_model.named_parameters())
    assert all(torch.isfinite(p).all() for p in after.values())
    changed = [k for k in before if not torch.equal(before[k], after[k].detach())]
    assert len(changed) > len(before) // 2, f"only {len(changed)} of {len(before)} parameters changed"
    assert all(p.device.type == "cuda" for p in after.values())


@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_fp16_training_steps_with_grad_scaler(corpus, tmp_path, recipe):
    trainer, batches = _trainer_and_batches(corpus, tmp_path, recipe, "--use-fp16", "True")
    assert trainer.scaler is not None and trainer.scaler.is_enabled()
    dtypes = _linear_output_dtypes(trainer.raw_model)
    before, infos = _train(trainer, batches)
    assert torch.float16 in dtypes
    # Steps whose scaled gradients overflowed are skipped by the scaler (which then halves its
    # scale); the others must have moved the parameters.
    _assert_trained(trainer, before, infos)
    assert 0 < trainer.scaler.get_scale() <= 2.0**16
    assert trainer.scaler.state_dict()["scale"] > 0


@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_bf16_training_steps(corpus, tmp_path, recipe):
    if not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bfloat16")
    trainer, batches = _trainer_and_batches(corpus, tmp_path, recipe, "--use-bf16", "True")
    assert trainer.scaler is None  # bfloat16 has float32's range: no loss scaling
    dtypes = _linear_output_dtypes(trainer.raw_model)
    before, infos = _train(trainer, batches)
    assert torch.bfloat16 in dtypes
    _assert_trained(trainer, before, infos)


# --------------------------------------------------------------------------------------------
# Pruned RNN-T loss: CUDA against CPU


def _pruned_loss_and_grads(device, t_lens, s_lens, vocab=40, dim=24, s_range=5, seed=0):
    """icefall's transducer loss (0.5 * simple + pruned, as ZIPA's recipe) on random encoder and
    decoder outputs; returns the two losses, the ranges and the gradients of the inputs."""
    g = torch.Generator().manual_seed(seed)
    B, T, S = len(t_lens), max(t_lens), max(s_lens)
    symbols = torch.randint(1, vocab, (B, S), generator=g)
    enc = torch.randn(B, T, dim, generator=g)
    dec = torch.randn(B, S + 1, dim, generator=g)
    w_am, w_lm = torch.randn(dim, vocab, generator=g) / dim**0.5, torch.randn(dim, vocab, generator=g) / dim**0.5
    w_out = torch.randn(dim, vocab, generator=g) / dim**0.5
    boundary = torch.tensor([[0, 0, s, t] for s, t in zip(s_lens, t_lens)], dtype=torch.int64)

    enc, dec, symbols, boundary = (x.to(device) for x in (enc, dec, symbols, boundary))
    w_am, w_lm, w_out = (w.to(device) for w in (w_am, w_lm, w_out))
    enc.requires_grad_(True)
    dec.requires_grad_(True)
    simple, (px_grad, py_grad) = rnnt_loss_smoothed(
        dec @ w_lm, enc @ w_am, symbols, 0, lm_only_scale=0.25, am_only_scale=0.0,
        boundary=boundary, reduction="sum", return_grad=True,
    )
    ranges = get_rnnt_prune_ranges(px_grad, py_grad, boundary, s_range)
    am_pruned, lm_pruned = do_rnnt_pruning(enc, dec, ranges)
    logits = torch.tanh(am_pruned + lm_pruned) @ w_out
    pruned = rnnt_loss_pruned(logits, symbols, ranges, 0, boundary, reduction="sum")
    (0.5 * simple + pruned).backward()
    return simple.detach().cpu(), pruned.detach().cpu(), ranges.cpu(), enc.grad.cpu(), dec.grad.cpu()


def test_pruned_rnnt_loss_cuda_matches_cpu():
    t_lens, s_lens = [60, 47, 33, 12], [14, 9, 11, 3]
    cpu = _pruned_loss_and_grads("cpu", t_lens, s_lens)
    gpu = _pruned_loss_and_grads("cuda", t_lens, s_lens)
    simple, pruned, ranges, enc_grad, dec_grad = cpu
    assert torch.isfinite(simple) and torch.isfinite(pruned)
    assert torch.equal(gpu[2], ranges)
    torch.testing.assert_close(gpu[0], simple, rtol=1e-5, atol=1e-3)
    torch.testing.assert_close(gpu[1], pruned, rtol=1e-5, atol=1e-3)
    assert rel_l2(gpu[3], enc_grad) < 1e-4
    assert rel_l2(gpu[4], dec_grad) < 1e-4


# --------------------------------------------------------------------------------------------
# Decoding: CUDA against CPU on the parity fixtures


@pytest.mark.parametrize("name", ["ctc_tiny", "transducer_tiny"])
def test_decoding_cuda_matches_cpu(name):
    folder = PARITY / name
    if not folder.is_dir():
        pytest.skip(f"{folder} is absent")
    from zipa.inference.zipa_api import initialize_model

    expected = torch.load(folder / "expected.pt", weights_only=True)
    feats, feat_lens = expected["feats"], expected["feat_lens"]
    cpu = initialize_model(folder / "model.pth", device="cpu")
    gpu = initialize_model(folder / "model.pth", device="cuda")
    with torch.inference_mode():
        out_cpu, lens_cpu = cpu.model.forward_encoder(feats, feat_lens)
        out_gpu, lens_gpu = gpu.model.forward_encoder(feats.cuda(), feat_lens.cuda())
        ids_cpu = cpu.token_ids(feats, feat_lens)
        ids_gpu = gpu.token_ids(feats, feat_lens)
    assert torch.equal(lens_gpu.cpu(), lens_cpu)
    for i, n in enumerate(lens_cpu.tolist()):
        assert rel_l2(out_gpu[i, :n].float().cpu(), out_cpu[i, :n]) < 1e-4, f"utterance {i}"
    assert ids_gpu == ids_cpu == expected["token_ids"]
