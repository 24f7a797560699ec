"""Parity with the original ZIPA/icefall code on its tiny random-weight fixtures.

Each fixture in ../shared/reference/parity/ holds a model.pth, three WAV clips and the
original's outputs (see its README). Models are loaded through the public loader with the
architecture inferred from the weights. Tolerance: rel. L2 < 1e-4 on valid frames.
"""

import json

import pytest
import torch
from conftest import PARITY, needs_parity, rel_l2

from zipa.inference.zipa_api import initialize_model

pytestmark = needs_parity

FIXTURES = ["ctc_tiny", "ctc_tiny_causal", "transducer_tiny"]
CTC_FIXTURES = ["ctc_tiny", "ctc_tiny_causal"]
TOL = 1e-4


@pytest.fixture(scope="module", params=FIXTURES)
def fixture(request):
    folder = PARITY / request.param
    torch.set_num_threads(2)
    model = initialize_model(folder / "model.pth", device="cpu")
    expected = torch.load(folder / "expected.pt", weights_only=True)
    config = json.loads((folder / "config.json").read_text())
    return request.param, folder, model, expected, config


def _encode(model, feats, feat_lens):
    with torch.inference_mode():
        return model.model.forward_encoder(feats, feat_lens)


def _assert_close_on_valid_frames(actual, expected, lengths):
    for i, n in enumerate(lengths.tolist()):
        assert rel_l2(actual[i, :n], expected[i, :n]) < TOL, f"utterance {i}"


def test_architecture_inferred(fixture):
    name, _, model, _, config = fixture
    assert sum(p.numel() for p in model.model.parameters()) == config["n_params"]
    assert len(model.model.state_dict()) == config["n_keys"]
    assert model.uses_ctc == (config["kind"] == "ctc")
    assert model.model.encoder.output_downsampling_factor == config["output_downsampling_factor"]
    assert model.model.encoder.causal == config["params"]["causal"]


def test_encoder_output(fixture):
    _, _, model, e, _ = fixture
    out, lens = _encode(model, e["feats"], e["feat_lens"])
    assert torch.equal(lens, e["encoder_out_lens"])
    assert out.shape == e["encoder_out"].shape
    _assert_close_on_valid_frames(out, e["encoder_out"], lens)


@pytest.mark.parametrize("fixture", CTC_FIXTURES, indirect=True)
def test_ctc_log_probs_and_loss(fixture):
    _, _, model, e, _ = fixture
    with torch.inference_mode():
        out, lens = model.model.forward_encoder(e["feats"], e["feat_lens"])
        log_probs = model.model.ctc_output(out)
        loss = model.model.forward_ctc(out, lens, e["ctc_loss_targets"], e["ctc_loss_target_lens"])
    _assert_close_on_valid_frames(log_probs, e["ctc_log_probs"], lens)
    assert abs(loss.item() - e["ctc_loss"].item()) < TOL * abs(e["ctc_loss"].item())


@pytest.mark.parametrize("fixture", ["ctc_tiny"], indirect=True)
def test_cr_ctc_losses(fixture):
    _, _, model, e, _ = fixture
    targets = torch.cat([e["ctc_loss_targets"]] * 2)
    target_lens = torch.cat([e["ctc_loss_target_lens"]] * 2)
    with torch.inference_mode():
        out, lens = model.model.forward_encoder(e["cr_feats"], e["cr_feat_lens"])
        ctc_loss, cr_loss = model.model.forward_cr_ctc(
            out, lens, targets, target_lens, time_mask=e["cr_time_mask"],
            cr_loss_masked_scale=float(e["cr_loss_masked_scale"]),
        )
    _assert_close_on_valid_frames(out, e["cr_encoder_out"], lens)
    assert abs(ctc_loss.item() - e["cr_ctc_loss"].item()) < TOL * abs(e["cr_ctc_loss"].item())
    assert abs(cr_loss.item() - e["cr_loss"].item()) < TOL * abs(e["cr_loss"].item())


@pytest.mark.parametrize("fixture", ["transducer_tiny"], indirect=True)
def test_decoder_and_joiner(fixture):
    _, _, model, e, _ = fixture
    asr = model.model
    with torch.inference_mode():
        decoder_out = asr.decoder(e["decoder_probe_tokens"], need_pad=False)
        out, _ = asr.forward_encoder(e["feats"], e["feat_lens"])
        logits = asr.joiner(out.unsqueeze(2), decoder_out.squeeze(1)[None, None])
    assert rel_l2(decoder_out, e["decoder_out"]) < TOL
    for i, n in enumerate(e["encoder_out_lens"].tolist()):
        assert rel_l2(logits[i, :n], e["joiner_logits"][i, :n]) < TOL


def test_greedy_token_ids_and_phones_from_features(fixture):
    _, _, model, e, config = fixture
    assert model.token_ids(e["feats"], e["feat_lens"]) == e["token_ids"] == config["token_ids"]
    assert model.predict(e["feats"], e["feat_lens"]) == e["phones"]


def test_inference_from_wav_files(fixture):
    _, folder, model, e, _ = fixture
    clips = [folder / "audio" / f"clip{i}.wav" for i in range(3)]
    assert model.inference(clips) == e["phones"]
    assert model.inference(e["audio"]) == e["phones"]


def test_get_fbank_matches_original_features(fixture):
    _, _, model, e, _ = fixture
    feats, lens = model.get_fbank(e["audio"])
    assert torch.equal(lens, e["feat_lens"])
    assert rel_l2(feats, e["feats"]) < 2e-5
