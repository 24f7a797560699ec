"""The simple inference API (zipa_ctc_inference) on the tiny CTC fixture: inputs, errors, CLI."""

import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import PARITY, REPO, needs_parity

import zipa_ctc_inference
from zipa.model.io import save_model

pytestmark = needs_parity
MODEL = PARITY / "ctc_tiny" / "model.pth"


@pytest.fixture(scope="module")
def model():
    return zipa_ctc_inference.initialize_model(MODEL, "ipa_simplified/unigram_127.model", device="cpu")


def test_original_attribute_names(model):
    assert isinstance(model, zipa_ctc_inference.ZIPA_CTC)
    assert model.encoder is model.model
    assert not model.model.training
    assert model.device == torch.device("cpu")


def test_silence_is_valid(model):
    phones = model.inference([np.zeros(16000, dtype=np.float32)])
    assert isinstance(phones, list) and len(phones) == 1 and isinstance(phones[0], list)


def test_predict_runs_without_building_a_graph(model):
    """Even where the caller has autograd on, decoding records no graph: every module of the
    model runs with grad off (inference mode) and gives outputs that neither require grad nor
    carry a grad_fn."""
    assert any(p.requires_grad for p in model.model.parameters()), "a graph would be built with grad on"
    feats, lens = model.get_fbank([np.zeros(8000, dtype=np.float32)])
    assert feats.shape == (1, lens.item(), 80)
    calls = []

    def record(module, inputs, output):
        outputs = [t for t in (output if isinstance(output, (tuple, list)) else (output,)) if torch.is_tensor(t)]
        calls.append((name_of[module], torch.is_grad_enabled(), torch.is_inference_mode_enabled(),
                      [(t.requires_grad, t.grad_fn) for t in outputs]))

    name_of = {module: name for name, module in model.model.named_children()}
    hooks = [module.register_forward_hook(record) for module in name_of]
    try:
        with torch.enable_grad():
            ids = model.token_ids(feats, lens)
    finally:
        for hook in hooks:
            hook.remove()
    assert isinstance(ids[0], list)
    assert {"encoder_embed", "encoder", "ctc_output"} <= {call[0] for call in calls}
    for name, grad_enabled, inference_mode, outputs in calls:
        assert not grad_enabled and inference_mode, f"{name} ran with autograd recording"
        assert outputs and all(not requires_grad and grad_fn is None for requires_grad, grad_fn in outputs), name


@pytest.mark.parametrize(
    "bad, message",
    [
        (np.zeros(0, dtype=np.float32), "empty"),
        (np.array([0.0, np.nan] * 8000, dtype=np.float32), "NaN"),
        (np.zeros(800, dtype=np.float32), "too short"),
    ],
)
def test_bad_arrays_name_the_item(model, bad, message):
    good = np.zeros(16000, dtype=np.float32)
    with pytest.raises(ValueError, match=rf"item 1.*{message}|{message}.*item 1"):
        model.inference([good, bad])


def test_unreadable_file_names_the_file(model, tmp_path):
    path = tmp_path / "broken.wav"
    path.write_bytes(b"RIFF....not really a wav file")
    with pytest.raises(ValueError, match="broken.wav"):
        model.inference([path])


def test_resampled_stereo_file_transcribes_like_its_16k_mono_samples(model, tmp_path):
    rng = np.random.default_rng(0)
    mono = (0.1 * rng.standard_normal(16000)).astype(np.float32)
    path = tmp_path / "stereo.wav"
    sf.write(path, np.stack([mono, mono], axis=1), 16000, subtype="FLOAT")
    assert model.inference([path]) == model.inference([mono])


def test_loads_our_own_saved_checkpoint_strictly(model, tmp_path):
    path = tmp_path / "exported.pth"
    save_model(model.model, _config_of(MODEL), path)
    reloaded = zipa_ctc_inference.initialize_model(path, device="cpu")
    for key, value in model.model.state_dict().items():
        assert torch.equal(value, reloaded.model.state_dict()[key])
    audio = [np.zeros(12000, dtype=np.float32)]
    assert reloaded.inference(audio) == model.inference(audio)


def _config_of(path):
    from zipa.model.io import load_config_for

    return load_config_for(path)


def test_script_transcribes_files_and_reports_failures(model, tmp_path):
    # The longest clip: alone it sees no batch padding, so it must give the batch's phones.
    clip = PARITY / "ctc_tiny" / "audio" / "clip2.wav"
    bad = tmp_path / "bad.flac"
    bad.write_bytes(b"garbage")
    result = subprocess.run(
        [sys.executable, str(REPO / "zipa_ctc_inference.py"), "--model", str(MODEL), "--device", "cpu", str(clip), str(bad)],
        capture_output=True, text=True, cwd=REPO,
    )
    assert result.returncode == 1
    expected = torch.load(PARITY / "ctc_tiny" / "expected.pt", weights_only=True)["phones"][2]
    assert result.stdout.splitlines() == [f"clip2.wav\t{' '.join(expected)}"]
    assert "bad.flac" in result.stderr


def test_transducer_inference_module_matches_fixture():
    import zipa_transducer_inference

    folder = PARITY / "transducer_tiny"
    model = zipa_transducer_inference.initialize_model(folder / "model.pth", device="cpu")
    assert isinstance(model, zipa_transducer_inference.ZIPA_TRANSDUCER) and not model.uses_ctc
    expected = torch.load(folder / "expected.pt", weights_only=True)
    clips = [folder / "audio" / f"clip{i}.wav" for i in range(3)]
    assert model.inference(clips) == expected["phones"]
