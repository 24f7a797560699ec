"""The non-released presets: `tiny` (every test's model) and `demo` (./run.sh's CPU model), and
the recipes' `--preset` flag that selects them."""

import argparse

import pytest
import torch

from zipa.model.asr_model import build_model
from zipa.model.config import preset
from zipa.train.args import add_model_arguments, model_config_from_args

# The recipes' model defaults and output downsampling (zipformer_crctc/train.py,
# zipformer_transducer/train.py), and the preset a `--preset tiny` run of each must build.
RECIPES = {
    "crctc": (dict(use_ctc=True, use_transducer=False), 1, "tiny"),
    "transducer": (dict(use_ctc=False, use_transducer=True), 2, "tiny-transducer"),
}
# ./run.sh's measured results were obtained with exactly this model.
DEMO_PARAMETERS = 7_594_219


def _config_from_flags(recipe: str, *flags: str):
    model_defaults, factor, _ = RECIPES[recipe]
    parser = argparse.ArgumentParser()
    add_model_arguments(parser, **model_defaults)
    return model_config_from_args(parser.parse_args(list(flags)), factor)


def _parameters(config) -> int:
    return sum(p.numel() for p in build_model(config).parameters())


@pytest.mark.parametrize("name", ["tiny", "tiny-transducer"])
def test_tiny_preset_builds_and_encodes(name):
    torch.manual_seed(0)
    model = build_model(preset(name)).eval()
    with torch.inference_mode():
        out, lens = model.forward_encoder(torch.randn(2, 100, 80), torch.tensor([100, 60]))
    assert out.shape[0] == 2 and bool(torch.isfinite(out).all())
    assert lens.tolist()[0] > lens.tolist()[1] > 0


@pytest.mark.parametrize("recipe", list(RECIPES))
def test_preset_tiny_flag_gives_the_tiny_preset(recipe):
    assert _config_from_flags(recipe, "--preset", "tiny") == preset(RECIPES[recipe][2])


def test_preset_demo_flag_gives_the_demo_model():
    config = _config_from_flags("crctc", "--preset", "demo")
    assert config == preset("demo")
    assert _parameters(config) == DEMO_PARAMETERS


def test_explicit_flags_win_over_the_preset():
    config = _config_from_flags("crctc", "--preset", "tiny", "--decoder-dim", "32", "--num-heads", "2,2,2,2,2,2")
    assert (config.decoder_dim, config.num_heads) == (32, (2,) * 6)
    assert config.encoder_dim == preset("tiny").encoder_dim
