"""The attention-decoder head (zipa.model.attention_decoder) against icefall's original.

`tests/data/attention_decoder_ref.pt` was made by running icefall's own
`egs/librispeech/ASR/zipformer/attention_decoder.py` (commit 36e0420c7e3e, identical in
function to ZIPA's copy) in a scratch directory outside this repository, with small stand-ins
for the k2 / icefall.utils helpers it imports; see `tests/data/make_attention_decoder_ref.md`
for the steps and command lines. It holds:

- a small seeded model (vocab 127, decoder_dim 32, 2 layers, attention_dim 48, 4 heads,
  feedforward 64, memory_dim 24): its config and state_dict;
- fixed inputs (encoder_out (3, 20, 24), lengths 20/15/9, token lists of length 6/1/3, and
  token lists with an empty one for `nll`) and the original's eval-mode outputs: padded
  decoder input/target, logits, the label-smoothed summed loss, d(loss)/d(encoder_out), nll;
- the (key, shape) list of the original built with ZIPA's default attention-decoder settings
  (dim 512, 6 layers, attention dim 512, 8 heads, feedforward 2048, memory_dim 512, vocab 127).

Nothing here imports the reference code at run time.
"""

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from zipa.model.asr_model import build_model
from zipa.model.attention_decoder import AttentionDecoderModel, LabelSmoothingLoss
from zipa.model.config import ModelConfig, infer_config

REF_PATH = Path(__file__).parent / "data" / "attention_decoder_ref.pt"
TOL = 1e-5


@pytest.fixture(scope="module")
def ref():
    return torch.load(REF_PATH, weights_only=True)


@pytest.fixture
def model(ref):
    model = AttentionDecoderModel(**ref["config"])
    model.load_state_dict(ref["state_dict"], strict=True)
    return model.eval()


def rel_err(ours, theirs):
    ours, theirs = ours.detach().double(), theirs.double()
    return float((ours - theirs).norm() / theirs.norm())


def test_matches_icefall(model, ref):
    ys_in, ys_in_lens, ys_out = model.prepare_ys(ref["token_ids"])
    assert torch.equal(ys_in, ref["ys_in_pad"]) and torch.equal(ys_out, ref["ys_out_pad"])
    assert ys_in_lens.tolist() == [len(t) + 1 for t in ref["token_ids"]]

    encoder_out = ref["encoder_out"].clone().requires_grad_(True)
    logits, _ = model.logits(encoder_out, ref["encoder_out_lens"], ref["token_ids"])
    assert rel_err(logits, ref["logits"]) < TOL

    loss = model.calc_att_loss(encoder_out, ref["encoder_out_lens"], ref["token_ids"])
    assert rel_err(loss, ref["loss"]) < TOL
    loss.backward()
    assert rel_err(encoder_out.grad, ref["encoder_out_grad"]) < TOL

    with torch.no_grad():
        nll = model.nll(ref["encoder_out"], ref["encoder_out_lens"], ref["nll_token_ids"])
    assert nll.shape == ref["nll"].shape
    assert rel_err(nll, ref["nll"]) < TOL


def test_token_id_formats_agree(model, ref):
    """A list of lists, a padded tensor (wider than needed) and a concatenated tensor."""
    token_ids, lens = ref["token_ids"], torch.tensor([len(t) for t in ref["token_ids"]])
    padded = torch.full((len(token_ids), int(lens.max()) + 3), 99)
    for i, t in enumerate(token_ids):
        padded[i, : len(t)] = torch.tensor(t)
    flat = torch.tensor([tok for t in token_ids for tok in t])
    args = (ref["encoder_out"], ref["encoder_out_lens"])
    with torch.no_grad():
        expected = model(*args, token_ids)
        assert torch.equal(model(*args, padded, lens), expected)
        assert torch.equal(model.calc_att_loss(*args, flat, lens), expected)
    with pytest.raises(ValueError, match="ys_lens"):
        model(*args, padded)


def test_nll_zero_after_eos_and_sums_to_unsmoothed_loss(ref):
    model = AttentionDecoderModel(**ref["config"], label_smoothing=0.0)
    model.load_state_dict(ref["state_dict"], strict=True)
    model.eval()
    args = (ref["encoder_out"], ref["encoder_out_lens"])
    with torch.no_grad():
        nll = model.nll(*args, ref["nll_token_ids"])
        loss = model(*args, ref["nll_token_ids"])
    for row, tokens in zip(nll, ref["nll_token_ids"]):
        assert (row[: len(tokens) + 1] > 0).all() and (row[len(tokens) + 1 :] == 0).all()
    assert torch.allclose(nll.sum(), loss, rtol=1e-6)


def test_label_smoothing_loss():
    torch.manual_seed(0)
    x = torch.randn(2, 5, 11)
    target = torch.randint(0, 11, (2, 5))
    target[1, 3:] = -1
    kept = target != -1
    plain = F.cross_entropy(x[kept], target[kept], reduction="sum")
    assert torch.allclose(LabelSmoothingLoss(label_smoothing=0.0)(x, target), plain)

    smooth = LabelSmoothingLoss(label_smoothing=0.1, reduction="none")(x, target)
    assert smooth.shape == (10,) and (smooth.view(2, 5)[~kept] == 0).all()
    # The smoothed target distribution as a dense tensor, written out directly.
    dist = F.one_hot(target.clamp(min=0), 11).float() * 0.9 + 0.1 / 11
    dense = -(x.log_softmax(-1) * dist)[kept].sum()
    assert torch.allclose(smooth.sum(), dense)
    mean = LabelSmoothingLoss(label_smoothing=0.1, reduction="mean")(x, target)
    assert torch.allclose(mean, dense / kept.sum())


def test_build_model_keys_match_icefall(ref):
    """ZIPA's default attention-decoder settings on a tiny encoder whose widest stack is 512
    (memory_dim = max encoder dim); built on the meta device, so no weights are allocated."""
    config = ModelConfig(
        use_attention_decoder=True,
        num_encoder_layers=(1, 1),
        downsampling_factor=(1, 2),
        feedforward_dim=(64, 64),
        num_heads=(2, 2),
        encoder_dim=(32, 512),
        encoder_unmasked_dim=(32, 32),
        cnn_module_kernel=(3, 3),
    )
    assert ref["default_config"]["memory_dim"] == config.max_encoder_dim
    with torch.device("meta"):
        state_dict = build_model(config).state_dict()
    ours = [(k, tuple(v.shape)) for k, v in state_dict.items() if k.startswith("attention_decoder.")]
    assert ours == [("attention_decoder." + k, tuple(s)) for k, s in ref["default_keys"]]

    inferred = infer_config(state_dict)
    assert inferred.use_attention_decoder and inferred.vocab_size == 127
    fields = ["attention_decoder_dim", "attention_decoder_num_layers",
              "attention_decoder_attention_dim", "attention_decoder_feedforward_dim"]
    assert [getattr(inferred, f) for f in fields] == [getattr(config, f) for f in fields]
    assert inferred.max_encoder_dim == state_dict[
        "attention_decoder.decoder.layers.0.src_attn.linear_k.weight"].shape[1]


def test_backward_in_train_mode(ref):
    torch.manual_seed(1)
    model = AttentionDecoderModel(**ref["config"]).train()
    encoder_out = ref["encoder_out"].clone().requires_grad_(True)
    loss = model(encoder_out, ref["encoder_out_lens"], ref["token_ids"])
    assert torch.isfinite(loss) and loss.item() > 0
    loss.backward()
    assert encoder_out.grad is not None and torch.isfinite(encoder_out.grad).all()
    assert encoder_out.grad.abs().sum() > 0
    for name, param in model.named_parameters():
        assert param.grad is not None, name
        assert torch.isfinite(param.grad).all(), name
        assert param.grad.abs().sum() > 0, name
    # Frames past each length are masked out of the cross-attention.
    lens = ref["encoder_out_lens"]
    for b, n in enumerate(lens.tolist()):
        assert (encoder_out.grad[b, n:] == 0).all()
