"""Checkpoint reading/writing and architecture inference (zipa.model.io, zipa.model.config)."""

import dataclasses
import json
import os
import pathlib
from pathlib import Path

import pytest
import torch
from torch import nn

from zipa.model import io as model_io
from zipa.model.config import ModelConfig, infer_config, preset, to_int_tuple
from zipa.model.io import (
    CheckpointError,
    load_config_for,
    load_state_dict_strict,
    read_state_dict,
    save_checkpoint_atomic,
    save_model,
)

PARITY = Path(__file__).resolve().parents[1].parent / "shared" / "reference" / "parity"
PRESETS = {  # reference file stem -> (our preset name, output_downsampling_factor)
    "ctc_small": ("small", 1),
    "ctc_large": ("large", 1),
    "transducer_small": ("small-transducer", 2),
    "transducer_large": ("large-transducer", 2),
}
FIXTURES = ["ctc_tiny", "ctc_tiny_causal", "transducer_tiny"]
# Fields that the weights alone determine (checked with no base config at all).
WEIGHT_FIELDS = [
    "feature_dim", "vocab_size", "num_encoder_layers", "downsampling_factor", "feedforward_dim",
    "num_heads", "encoder_dim", "query_head_dim", "value_head_dim", "pos_head_dim", "pos_dim",
    "cnn_module_kernel", "output_downsampling_factor", "causal", "use_ctc", "use_transducer",
    "use_attention_decoder",
]
TRANSDUCER_FIELDS = ["decoder_dim", "joiner_dim", "context_size"]

needs_parity = pytest.mark.skipif(not PARITY.is_dir(), reason="shared/reference/parity is absent")


def _preset_json(stem):
    return json.loads((PARITY / f"preset_{stem}.json").read_text())


def _fixture_json(name):
    return json.loads((PARITY / name / "config.json").read_text())


def _meta_state_dict(keys):
    return {name: torch.empty(shape, device="meta") for name, shape in keys}


def _norm(config, name, value):
    """A field value in comparable form: per-stack tuples expanded to one entry per stack."""
    if name in ("chunk_size", "left_context_frames"):
        return to_int_tuple(value)
    if isinstance(getattr(config, name), tuple):
        value = to_int_tuple(value)
        return value * len(config.downsampling_factor) if len(value) == 1 else value
    return value


def _mismatches(config, params, output_downsampling_factor, fields=None):
    expected = dict(params, output_downsampling_factor=output_downsampling_factor)
    names = fields or [f.name for f in dataclasses.fields(ModelConfig) if f.name in expected]
    return {
        name: (expected[name], getattr(config, name))
        for name in names
        if _norm(config, name, expected[name]) != _norm(config, name, getattr(config, name))
    }


# ----------------------------------------------------------------------------- infer_config


@needs_parity
@pytest.mark.parametrize("stem", list(PRESETS))
def test_infer_config_presets(stem):
    ref = _preset_json(stem)
    state_dict = _meta_state_dict(ref["keys"])
    ods = PRESETS[stem][1]
    base = ModelConfig.from_dict(ref["params"])
    assert _mismatches(infer_config(state_dict, base), ref["params"], ods) == {}
    # Without a base config every weight-determined field must still come out right.
    fields = WEIGHT_FIELDS + (TRANSDUCER_FIELDS if "transducer" in stem else [])
    assert _mismatches(infer_config(state_dict), ref["params"], ods, fields) == {}


@needs_parity
@pytest.mark.parametrize("stem", list(PRESETS))
def test_presets_match_reference_params(stem):
    name, ods = PRESETS[stem]
    assert _mismatches(preset(name), _preset_json(stem)["params"], ods) == {}


@needs_parity
@pytest.mark.parametrize("name", FIXTURES)
def test_infer_config_fixtures(name):
    ref = _fixture_json(name)
    state_dict = torch.load(PARITY / name / "model.pth", map_location="cpu", weights_only=True)
    ods = ref["output_downsampling_factor"]
    base = ModelConfig.from_dict(ref["params"])
    assert _mismatches(infer_config(state_dict, base), ref["params"], ods) == {}
    fields = WEIGHT_FIELDS + (TRANSDUCER_FIELDS if "transducer" in name else [])
    assert _mismatches(infer_config(state_dict), ref["params"], ods, fields) == {}
    # load_config_for reads the config.json beside the checkpoint for the rest.
    assert _mismatches(load_config_for(PARITY / name / "model.pth"), ref["params"], ods) == {}


@needs_parity
def test_infer_config_output_heads():
    """Context size 1 (no decoder conv) and an attention decoder, on the released key sets."""
    keys = dict(_preset_json("transducer_small")["keys"])
    del keys["decoder.conv.weight"]
    config = infer_config(keys)
    assert config.use_transducer and not config.use_ctc and config.context_size == 1

    keys = dict(_preset_json("ctc_small")["keys"])
    for i in range(3):
        keys[f"attention_decoder.decoder.layers.{i}.self_attn.linear_q.weight"] = [384, 256]
        keys[f"attention_decoder.decoder.layers.{i}.feed_forward.0.weight"] = [1024, 256]
    keys["attention_decoder.decoder.embed.weight"] = [127, 256]
    config = infer_config(keys)
    assert config.use_ctc and config.use_attention_decoder
    assert (config.attention_decoder_dim, config.attention_decoder_num_layers) == (256, 3)
    assert config.attention_decoder_attention_dim == 384
    assert config.attention_decoder_feedforward_dim == 1024
    keys["attention_decoder.decoder.embed.weight"] = [100, 256]
    with pytest.raises(ValueError, match="vocabulary size"):
        infer_config(keys)


@needs_parity
def test_load_config_for_overrides():
    path = PARITY / "ctc_tiny_causal" / "model.pth"
    config = load_config_for(path, chunk_size=[32], left_context_frames="128")
    assert config.causal and config.chunk_size == (32,) and config.left_context_frames == (128,)
    with pytest.raises(TypeError, match="no_such_field"):
        load_config_for(path, no_such_field=1)


def test_infer_config_defaults_without_base():
    """encoder_unmasked_dim cannot be read from weights: default, clamped to encoder_dim."""
    keys = {}
    for k, (dim, factor) in enumerate([(32, 1), (48, 2)]):
        prefix = f"encoder.encoders.{k}." + ("encoder." if factor > 1 else "")
        if factor > 1:
            keys[f"encoder.encoders.{k}.downsample.bias"] = (factor,)
        for name, shape in {
            "norm.bias": (dim,),
            "feed_forward2.in_proj.weight": (2 * dim, dim),
            "conv_module1.depthwise_conv.weight": (dim, 1, 7),
            "self_attn_weights.linear_pos.weight": (6, 16),  # 2 heads * pos_head_dim 3
            "self_attn_weights.in_proj.weight": (2 * (2 * 8 + 3), dim),
            "self_attn1.in_proj.weight": (2 * 5, dim),
        }.items():
            keys[prefix + "layers.0." + name] = shape
    keys.update({
        "encoder_embed.conv.7.weight": (128, 32, 3, 3),
        "encoder_embed.out.weight": (32, 19 * 128),
        "ctc_output.1.weight": (50, 48),
    })
    config = infer_config(keys)  # plain shapes work as well as tensors
    assert config.num_heads == (2, 2) and config.pos_head_dim == (3,)
    assert config.query_head_dim == (8,) and config.value_head_dim == (5,)
    assert config.encoder_unmasked_dim == (32, 48)
    assert config.feature_dim == 80 and config.vocab_size == 50 and not config.use_transducer
    assert infer_config(keys, ModelConfig(feature_dim=81)).feature_dim == 81  # same 19 bins
    with pytest.raises(ValueError, match="not a ZIPA"):
        infer_config({k: v for k, v in keys.items() if k != "encoder_embed.out.weight"})
    with pytest.raises(ValueError):
        infer_config({"linear.weight": (2, 2)})


# ----------------------------------------------------------------------------- read_state_dict


def _tiny_state_dict():
    return {"a.weight": torch.randn(3, 2), "a.bias": torch.randn(3)}


def _assert_same(sd1, sd2):
    assert list(sd1) == list(sd2)
    assert all(torch.equal(sd1[k], sd2[k]) for k in sd1)


def test_read_bare_and_icefall_dicts(tmp_path):
    sd, avg = _tiny_state_dict(), _tiny_state_dict()
    torch.save(sd, tmp_path / "bare.pt")
    _assert_same(read_state_dict(tmp_path / "bare.pt"), sd)

    torch.save({"model": sd, "model_avg": avg, "optimizer": {"lr": 0.1}, "batch_idx_train": 7}, tmp_path / "ice.pt")
    _assert_same(read_state_dict(tmp_path / "ice.pt"), sd)
    _assert_same(read_state_dict(tmp_path / "ice.pt", use_averaged=True), avg)
    torch.save({"model": sd}, tmp_path / "noavg.pt")
    _assert_same(read_state_dict(tmp_path / "noavg.pt", use_averaged=True), sd)

    torch.save({"model": {"module." + k: v for k, v in sd.items()}}, tmp_path / "ddp.pt")
    _assert_same(read_state_dict(str(tmp_path / "ddp.pt")), sd)


def test_read_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        read_state_dict(tmp_path / "missing.pt")

    torch.save({"model": {"w": torch.randn(1000)}}, tmp_path / "full.pt")
    data = (tmp_path / "full.pt").read_bytes()
    for fraction in (0.1, 0.5, 0.9):
        (tmp_path / f"cut{fraction}.pt").write_bytes(data[: int(len(data) * fraction)])
    (tmp_path / "cut-1.pt").write_bytes(data[:-1])
    torch.save({"w": torch.randn(1000)}, tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)
    assert read_state_dict(tmp_path / "legacy.pt")["w"].shape == (1000,)
    (tmp_path / "legacy_cut.pt").write_bytes((tmp_path / "legacy.pt").read_bytes()[:2000])
    (tmp_path / "garbage.pt").write_bytes(b"not a checkpoint at all\n" * 10)
    (tmp_path / "pickle_garbage.pt").write_bytes(b"\x80\x02garbage")
    (tmp_path / "empty.pt").write_bytes(b"")
    names = ["cut0.1.pt", "cut0.5.pt", "cut0.9.pt", "cut-1.pt", "legacy_cut.pt", "garbage.pt", "pickle_garbage.pt", "empty.pt"]
    for name in names:
        with pytest.raises(CheckpointError, match="truncated or not a torch checkpoint") as info:
            read_state_dict(tmp_path / name)
        assert str(tmp_path / name) in str(info.value)

    for bad in ([torch.zeros(2)], {"optimizer": {"lr": 1.0}}, {}, {"model": {"w": 3}}):
        torch.save(bad, tmp_path / "bad.pt")
        with pytest.raises(CheckpointError, match="not a state_dict") as info:
            read_state_dict(tmp_path / "bad.pt")
        assert str(tmp_path / "bad.pt") in str(info.value)


def test_read_pickled_objects_needs_trust(tmp_path):
    sd = _tiny_state_dict()
    torch.save({"model": sd, "exp_dir": pathlib.PurePosixPath("exp")}, tmp_path / "full.pt")
    with pytest.raises(CheckpointError, match="trusted=True"):
        read_state_dict(tmp_path / "full.pt")
    _assert_same(read_state_dict(tmp_path / "full.pt", trusted=True), sd)


# ----------------------------------------------------------------------------- saving


def test_save_checkpoint_atomic(tmp_path, monkeypatch):
    path = tmp_path / "sub" / "ckpt.pt"
    save_checkpoint_atomic({"x": torch.arange(3)}, path)
    assert os.listdir(path.parent) == ["ckpt.pt"]
    before = path.read_bytes()

    real_save = torch.save

    def failing_save(obj, f, *args, **kwargs):
        f.write(b"partial bytes")
        raise RuntimeError("disk full")

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(RuntimeError, match="disk full"):
        save_checkpoint_atomic({"x": torch.arange(5)}, path)
    monkeypatch.setattr(torch, "save", real_save)
    assert os.listdir(path.parent) == ["ckpt.pt"]
    assert path.read_bytes() == before
    assert torch.equal(torch.load(path, weights_only=True)["x"], torch.arange(3))


def test_save_model_writes_state_dict_and_config(tmp_path):
    model = nn.Sequential(nn.Linear(2, 3), nn.Linear(3, 1))
    config = ModelConfig(vocab_size=42, chunk_size=(8,), causal=True)
    save_model(model, config, tmp_path / "m.pth")
    assert sorted(os.listdir(tmp_path)) == ["config.json", "m.pth"]
    _assert_same(read_state_dict(tmp_path / "m.pth"), model.state_dict())
    assert ModelConfig.load_json(tmp_path / "config.json") == config


# ----------------------------------------------------------------------------- strict loading


class _Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(3, 4)
        self.b = nn.Linear(4, 2)


def test_load_state_dict_strict_messages():
    model = _Tiny()
    good = {k: torch.randn_like(v) for k, v in model.state_dict().items()}
    load_state_dict_strict(model, good, "good.pt")
    assert torch.equal(model.a.weight, good["a.weight"])

    bad = dict(good)
    del bad["b.bias"]
    bad["c.weight"] = torch.zeros(1)
    bad["a.weight"] = torch.zeros(5, 3)
    with pytest.raises(CheckpointError) as info:
        load_state_dict_strict(model, bad, "/some/where/bad.pt")
    message = str(info.value)
    assert "/some/where/bad.pt" in message
    assert "missing keys" in message and "b.bias" in message
    assert "unexpected keys" in message and "c.weight" in message
    assert "a.weight: expected [4, 3], found [5, 3]" in message

    many = dict(good, **{f"extra{i}": torch.zeros(1) for i in range(8)})
    with pytest.raises(CheckpointError, match=r"8 unexpected keys \(\+3 more\)") as info:
        load_state_dict_strict(model, many, "many.pt")
    assert "extra4" in str(info.value) and "extra5" not in str(info.value)


# ----------------------------------------------------------------------------- with the model


def _build_model():
    try:
        from zipa.model.asr_model import build_model
    except ImportError as e:  # the model code is written separately
        pytest.skip(f"zipa.model.asr_model not importable yet: {e}")
    return build_model


@needs_parity
@pytest.mark.parametrize("name", FIXTURES)
def test_load_model_fixtures(name):
    _build_model()
    path = PARITY / name / "model.pth"
    model, config = model_io.load_model(path)
    file_sd = torch.load(path, map_location="cpu", weights_only=True)
    model_sd = model.state_dict()
    assert [(k, tuple(v.shape)) for k, v in model_sd.items()] == [(k, tuple(v.shape)) for k, v in file_sd.items()]
    assert all(torch.equal(model_sd[k], file_sd[k]) for k in file_sd)
    assert not model.training
    ref = _fixture_json(name)
    assert sum(p.numel() for p in model.parameters()) == ref["n_params"]
    assert _mismatches(config, ref["params"], ref["output_downsampling_factor"]) == {}


@needs_parity
@pytest.mark.parametrize("stem", list(PRESETS))
def test_build_model_presets_keys_and_shapes(stem):
    build_model = _build_model()
    ref = _preset_json(stem)
    with torch.device("meta"):
        model = build_model(preset(PRESETS[stem][0]))
    keys = [[k, list(v.shape)] for k, v in model.state_dict().items()]
    assert keys == ref["keys"]
    assert sum(p.numel() for p in model.parameters()) == ref["n_params"]
