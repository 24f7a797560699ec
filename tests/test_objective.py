"""The objective follows the model: training records it, averaging carries it, fine-tuning takes
it from the checkpoint unless flags say otherwise (and logs both), a released CR-CTC model stays
CR-CTC, and a model that records none trains with the recipe's (ZIPA's) defaults."""

import json

import torch
from test_finetune import _finetune, _flags, _log, _trainer, corpus, sources  # noqa: F401 (fixtures)
from test_pretrained import make_hub_cache
from training_utils import training_flags

from zipa.data import module as data_module
from zipa.train.averaging import main as average
from zipa.train.objective import add_objective
from zipa.train.recipe import ZIPA_MODEL_DEFAULTS, parse_training_args, run_training, training_parser

ZIPA_CTC_RECIPE = (ZIPA_MODEL_DEFAULTS, {}, 1)  # zipformer_crctc/train.py's defaults (ZIPA's)
CRCTC_FLAGS = ("--use-ctc", "True", "--use-transducer", "False", "--use-cr-ctc", "True")


def _parse(argv):
    return parse_training_args(training_parser("test", data_module.AsrDataModule, *ZIPA_CTC_RECIPE[:2]), argv)


def test_training_records_the_objective_and_averaging_keeps_it(corpus, tmp_path):  # noqa: F811
    exp = tmp_path / "exp"
    flags = training_flags(corpus, exp, *CRCTC_FLAGS, "--enable-spec-aug", "False", "--cr-loss-scale", "0.3",
                           "--max-batches", "1")
    run_training("test", data_module.AsrDataModule, 1, ZIPA_MODEL_DEFAULTS, {}, argv=flags)
    expected = dict(use_ctc=True, use_transducer=False, use_attention_decoder=False, use_cr_ctc=True,
                    ctc_loss_scale=0.2, cr_loss_scale=0.3, cr_loss_masked_scale=1.0, time_mask_ratio=2.0,
                    simple_loss_scale=0.5, prune_range=5, lm_scale=0.25, am_scale=0.1,
                    attention_decoder_loss_scale=0.8)
    assert json.loads((exp / "config.json").read_text())["objective"] == expected
    assert torch.load(exp / "checkpoint-1.pt", weights_only=False)["objective"] == expected
    out = tmp_path / "averaged" / "model.pth"
    out.parent.mkdir()
    average(["--exp-dir", str(exp), "--iter", "1", "--avg", "1", "--use-averaged-model", "False", "--output", str(out)])
    assert json.loads((out.parent / "config.json").read_text())["objective"] == expected


def _with_objective(sources, tmp_path, **objective):  # noqa: F811
    """The tiny CTC source model, its config.json recording `objective`."""
    folder = tmp_path / "source"
    folder.mkdir()
    model = folder / "model.pth"
    model.write_bytes(sources["ctc"].read_bytes())
    (folder / "config.json").write_text((sources["ctc"].parent / "config.json").read_text())
    add_objective(folder / "config.json", dict(use_ctc=True, use_transducer=False, use_attention_decoder=False,
                                               **objective))
    return model


def test_finetuning_takes_the_checkpoint_objective_unless_given(corpus, sources, tmp_path):  # noqa: F811
    crctc = _with_objective(sources, tmp_path, use_cr_ctc=True, cr_loss_scale=0.4, ctc_loss_scale=0.3)
    args = _parse(_flags(corpus, tmp_path / "a", *_finetune(crctc)))
    assert (args.use_cr_ctc, args.cr_loss_scale, args.ctc_loss_scale, args.enable_spec_aug) == (True, 0.4, 0.3, False)
    given = _parse(_flags(corpus, tmp_path / "b", *_finetune(crctc), "--use-cr-ctc", "False", "--ctc-loss-scale", "1"))
    assert (given.use_cr_ctc, given.cr_loss_scale, given.ctc_loss_scale, given.enable_spec_aug) == (False, 0.4, 1.0,
                                                                                                    True)
    recipe = (ZIPA_MODEL_DEFAULTS, {}, 1)
    _trainer(recipe, _flags(corpus, tmp_path / "c", *_finetune(crctc)))
    log = _log(tmp_path / "c")
    assert ("was trained with CR-CTC (ctc_loss_scale 0.3, cr_loss_scale 0.4)" in log
            and "this run trains with CR-CTC (ctc_loss_scale 0.3, cr_loss_scale 0.4, time_mask_ratio 2.0) "
                "(the checkpoint's)" in log), log


def test_a_plain_ctc_model_stays_plain_ctc_where_the_recipe_default_is_cr_ctc(corpus, sources, tmp_path):  # noqa: F811
    plain = _with_objective(sources, tmp_path, use_cr_ctc=False)
    parser = training_parser("test", data_module.AsrDataModule, ZIPA_MODEL_DEFAULTS, dict(use_cr_ctc=True))
    args = parse_training_args(parser, _flags(corpus, tmp_path / "a", *_finetune(plain)))
    assert args.use_cr_ctc is False


def test_a_released_crctc_model_keeps_cr_ctc(corpus, sources, tmp_path, monkeypatch):  # noqa: F811
    cache = tmp_path / "hub"
    make_hub_cache(cache, "anyspeech/zipa-small-crctc-500k", {"zipa_small_crctc_500000_avg10.pth": sources["ctc"]})
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    args = _parse(_flags(corpus, tmp_path / "a", *_finetune("zipa-cr-small-500k")))
    assert (args.use_cr_ctc, args.enable_spec_aug) == (True, False)


def test_a_model_recording_no_objective_trains_with_the_recipe_defaults(corpus, sources, tmp_path):  # noqa: F811
    args = _parse(_flags(corpus, tmp_path / "a", *_finetune(sources["ctc"])))
    assert args.use_cr_ctc is False and args.finetune_objective[0] is None
