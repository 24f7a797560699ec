"""Fine-tuning (--do-finetune, --finetune-ckpt, --init-modules, --freeze-modules, --use-mux) in
both recipes, on the tests' tiny model and corpus."""

import math
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import REPO
from test_pretrained import make_hub_cache
from training_utils import TINY_MODEL_FLAGS, make_tiny_corpus, training_flags

from zipa.data import module as data_module
from zipa.data.shar import ShardRecord, write_shar
from zipa.model.asr_model import build_model
from zipa.model.config import preset
from zipa.model.io import read_state_dict, save_model
from zipa.train.checkpoints import load_training_checkpoint, save_training_checkpoint
from zipa.train.distributed import DistInfo
from zipa.train.finetune import matches
from zipa.model.scaling import ScheduledFloat, set_batch_count
from zipa.train.loop import Trainer, schedule_batch_count
from zipa.train.recipe import parse_training_args, run_training, training_parser

# (model defaults, training defaults, output_downsampling_factor) of the two recipes' train.py
CTC = (dict(use_ctc=True, use_transducer=False), dict(use_cr_ctc=True, enable_spec_aug=False), 1)
TRANSDUCER = (dict(use_ctc=False, use_transducer=True), dict(use_cr_ctc=False), 2)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_tiny_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """Trained-looking tiny models to start from: seeded weights, shifted by 0.01 so that no
    tensor equals a fresh initialisation. `ctc`/`transducer`: bare .pth with config.json;
    `checkpoint`: the CTC weights inside a training checkpoint."""
    root = tmp_path_factory.mktemp("sources")
    out = {}
    for kind, name in (("ctc", "tiny"), ("transducer", "tiny-transducer")):
        torch.manual_seed(123)
        config = preset(name)
        model = build_model(config)
        with torch.no_grad():
            for value in model.state_dict().values():
                if value.is_floating_point():
                    value.add_(0.01)
        out[kind] = root / kind / "model.pth"
        out[kind].parent.mkdir()
        save_model(model, config, out[kind])
        if kind == "ctc":
            out["checkpoint"] = root / "exp" / "checkpoint-5.pt"
            out["checkpoint"].parent.mkdir()
            save_training_checkpoint(out["checkpoint"], model, counters={"batch_idx_train": 5})
    return out


def _weights(path):
    """The model weights of a .pth or a training checkpoint."""
    return read_state_dict(path, trusted=True)


def _flags(corpus, exp_dir, *extra):
    """training_flags without --preset: the architecture comes from the checkpoint."""
    flags = training_flags(corpus, exp_dir, *extra)
    at = flags.index(TINY_MODEL_FLAGS[0])
    return flags[:at] + flags[at + len(TINY_MODEL_FLAGS):]


def _args(recipe, argv):
    model_defaults, training_defaults, _ = recipe
    parser = training_parser("test", data_module.AsrDataModule, model_defaults, training_defaults)
    return parse_training_args(parser, argv)


def _trainer(recipe, argv) -> Trainer:
    return Trainer(_args(recipe, argv), DistInfo(), None, output_downsampling_factor=recipe[2])


def _train(recipe, argv) -> None:
    model_defaults, training_defaults, factor = recipe
    run_training("test", data_module.AsrDataModule, factor, model_defaults, training_defaults, argv=argv)


def _log(exp_dir) -> str:
    return "".join(p.read_text() for p in (exp_dir / "log").iterdir())


def _finetune(source, *extra):
    return ("--do-finetune", "True", "--finetune-ckpt", str(source), *extra)


# -- starting weights ----------------------------------------------------------------------------


@pytest.mark.parametrize("source", ["ctc", "checkpoint"])
def test_all_weights_and_the_architecture_come_from_the_checkpoint(corpus, sources, tmp_path, source):
    trainer = _trainer(CTC, _flags(corpus, tmp_path, *_finetune(sources[source])))
    expected = _weights(sources["ctc"])
    assert trainer.config.encoder_dim == preset("tiny").encoder_dim  # not the default (small) preset
    state = trainer.raw_model.state_dict()
    assert state.keys() == expected.keys()
    for key, value in expected.items():
        assert torch.equal(state[key], value), key
    # model_avg starts from the loaded weights.
    for key, value in trainer.model_avg.state_dict().items():
        assert torch.equal(value, expected[key].double()), key
    assert f"loaded {len(expected)} of {len(expected)} tensors" in _log(tmp_path)


def test_init_modules_loads_only_those_prefixes(corpus, sources, tmp_path):
    prefixes = ["encoder_embed", "encoder.encoders.0"]
    flags = _flags(corpus, tmp_path / "ft", *_finetune(sources["ctc"], "--init-modules", ",".join(prefixes)))
    trainer = _trainer(CTC, flags)
    fresh = _trainer(CTC, training_flags(corpus, tmp_path / "fresh")).raw_model.state_dict()  # same seed
    loaded = _weights(sources["ctc"])
    state = trainer.raw_model.state_dict()
    chosen = [k for k in state if matches(k, prefixes)]
    assert 10 < len(chosen) < len(state) - 10 and not any(k.startswith("encoder.encoders.1.") for k in chosen)
    for key, value in state.items():
        if not value.is_floating_point():
            continue
        if key in chosen:
            assert torch.equal(value, loaded[key]) and not torch.equal(value, fresh[key]), key
        else:
            assert torch.equal(value, fresh[key]) and not torch.equal(value, loaded[key]), key
    assert f"loaded {len(chosen)} of {len(state)} tensors" in _log(tmp_path / "ft")
    assert f"{len(state) - len(chosen)} keep their fresh initialisation" in _log(tmp_path / "ft")

    with pytest.raises(ValueError, match="--init-modules: 'encoders' matches no parameter"):
        _trainer(CTC, _flags(corpus, tmp_path / "typo", *_finetune(sources["ctc"], "--init-modules", "encoders")))


def test_model_flags_that_contradict_the_checkpoint_name_the_key_and_shapes(corpus, sources, tmp_path):
    flags = _flags(corpus, tmp_path, *_finetune(sources["ctc"], "--encoder-dim", "32,48,64,96,64,40"))
    with pytest.raises(ValueError) as error:
        _trainer(CTC, flags)
    assert str(error.value).startswith(f"--encoder-dim 32,48,64,96,64,40 contradicts the checkpoint {sources['ctc']}: "
                                       "encoder.encoders.5.")
    assert "has shape (48,) in the checkpoint, (40,) from the flags" in str(error.value)
    # Flags that agree with the checkpoint are fine, and so is a new head next to loaded modules.
    _trainer(CTC, training_flags(corpus, tmp_path / "agree", *_finetune(sources["ctc"], "--causal", "False")))
    trainer = _trainer(CTC, _flags(corpus, tmp_path / "head", *_finetune(
        sources["ctc"], "--use-attention-decoder", "True", "--init-modules", "encoder_embed,encoder,ctc_output")))
    assert trainer.config.use_attention_decoder and trainer.config.use_ctc
    # The other recipe's checkpoint: the message says which recipe fits it.
    with pytest.raises(ValueError, match=r"output_downsampling_factor is 2, this recipe's 1: fine-tune it with "
                       r"zipformer_transducer/train\.py"):
        _trainer(CTC, _flags(corpus, tmp_path / "other", *_finetune(sources["transducer"])))


def test_a_model_name_resolves_through_the_hub_cache(corpus, sources, tmp_path, monkeypatch):
    cache = tmp_path / "hub"
    snapshot = make_hub_cache(cache, "anyspeech/zipa-small-crctc-500k",
                              {"zipa_small_crctc_500000_avg10.pth": sources["ctc"]})
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    trainer = _trainer(CTC, _flags(corpus, tmp_path / "exp", *_finetune("zipa-cr-small-500k")))
    expected = _weights(sources["ctc"])
    for key, value in trainer.raw_model.state_dict().items():
        assert torch.equal(value, expected[key]), key
    assert f"fine-tuning from {snapshot / 'zipa_small_crctc_500000_avg10.pth'}" in _log(tmp_path / "exp")


def test_learning_rate_defaults_of_finetune_unless_given(corpus, sources, tmp_path):
    trainer = _trainer(CTC, _flags(corpus, tmp_path / "a", *_finetune(sources["ctc"], "--lr-epochs", "7")))
    assert trainer.optimizer.defaults["lr"] == 0.0045
    assert (trainer.scheduler.lr_batches, trainer.scheduler.lr_epochs) == (100000, 7)
    plain = _args(CTC, training_flags(corpus, tmp_path / "b"))
    assert (plain.base_lr, plain.lr_batches, plain.lr_epochs) == (0.045, 7500, 3.5)
    with pytest.raises(ValueError, match="--finetune-ckpt needs --do-finetune True"):
        _args(CTC, training_flags(corpus, tmp_path / "c", "--finetune-ckpt", str(sources["ctc"])))


def test_fine_tuning_starts_the_model_schedules_at_their_end(corpus, sources, tmp_path):
    # finetune.py adds 100000 to the schedules' batch count: a trained model keeps its final
    # dropout, skip rates and balancer settings instead of a fresh model's warm-up values.
    tuned = _args(CTC, _flags(corpus, tmp_path / "a", *_finetune(sources["ctc"]), "--max-duration", "8",
                              "--ref-duration", "16", "--schedule-speedup", "3"))
    plain = _args(CTC, training_flags(corpus, tmp_path / "b", "--max-duration", "8", "--ref-duration", "16",
                                      "--schedule-speedup", "3"))
    # 10 batches of 8 s on 2 ranks = 10 batches of 16 s, advanced 3 times faster.
    assert schedule_batch_count(plain, 10, world_size=2) == pytest.approx(30.0)
    assert schedule_batch_count(tuned, 10, world_size=2) == pytest.approx(100030.0)
    # At that count every schedule of the model has reached its last point; a plain run's has not.
    model = build_model(preset("tiny")).train()
    schedules = [m for m in model.modules() if isinstance(m, ScheduledFloat)]
    set_batch_count(model, schedule_batch_count(tuned, 1, world_size=1))
    assert schedules and all(float(m) == m.schedule.points[-1][1] for m in schedules)
    set_batch_count(model, schedule_batch_count(plain, 1, world_size=1))
    assert any(float(m) != m.schedule.points[-1][1] for m in schedules)


# -- training ------------------------------------------------------------------------------------


def test_frozen_modules_stay_frozen_and_a_resumed_run_is_exact(corpus, sources, tmp_path):
    frozen = ["encoder_embed", "encoder.encoders.0"]
    base = _finetune(sources["ctc"], "--num-epochs", "1", "--save-every-n", "2", "--average-period", "1000")
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    _train(CTC, _flags(corpus, straight, *base, "--freeze-modules", ",".join(frozen)))

    start = _weights(sources["ctc"])
    final = _weights(straight / "epoch-1.pt")
    checkpoint = load_training_checkpoint(straight / "checkpoint-2.pt")
    assert checkpoint["freeze_modules"] == frozen
    changed = [k for k in final if final[k].is_floating_point() and not torch.equal(final[k], start[k])]
    trainable = [k for k, v in final.items() if v.is_floating_point() and not matches(k, frozen)]
    assert not [k for k in changed if matches(k, frozen)], "a frozen parameter moved"
    assert len(changed) > 0.9 * len(trainable), f"only {len(changed)} of {len(trainable)} trainable tensors moved"
    # Frozen parameters are not in the optimiser.
    trainer_params = sum(len(g["params"]) for g in checkpoint["optimizer"]["param_groups"])
    model = build_model(preset("tiny"))
    assert trainer_params == sum(1 for name, _ in model.named_parameters() if not matches(name, frozen))
    # model_avg started from the loaded weights (no averaging step before batch 1000).
    for key, value in checkpoint["model_avg"].items():
        assert torch.equal(value, start[key].double()), key

    # Resumed from checkpoint-2.pt, without --freeze-modules: the checkpoint keeps them frozen,
    # and the fine-tuning weights are not loaded over the resumed ones.
    resumed.mkdir()
    (resumed / "checkpoint-2.pt").write_bytes((straight / "checkpoint-2.pt").read_bytes())
    _train(CTC, _flags(corpus, resumed, *base, "--start-batch", "2"))
    again = _weights(resumed / "epoch-1.pt")
    assert again.keys() == final.keys()
    for key in final:
        assert torch.equal(again[key], final[key]), key
    with pytest.raises(ValueError, match="--freeze-modules encoder differs from the run being resumed"):
        _trainer(CTC, _flags(corpus, resumed, *base, "--start-batch", "2", "--freeze-modules", "encoder"))


def test_transducer_fine_tunes(corpus, sources, tmp_path):
    _train(TRANSDUCER, _flags(corpus, tmp_path, *_finetune(sources["transducer"], "--num-epochs", "1")))
    start, final = _weights(sources["transducer"]), _weights(tmp_path / "epoch-1.pt")
    assert final.keys() == start.keys() and "joiner.output_linear.weight" in final
    assert all(torch.isfinite(v).all() for v in final.values() if v.is_floating_point())
    assert not torch.equal(final["decoder.embedding.weight"], start["decoder.embedding.weight"])
    assert "loaded" in _log(tmp_path) and "fresh initialisation" in _log(tmp_path)


# -- mixing with the original data ---------------------------------------------------------------


def _original_corpus(root, count=20):
    noise = np.random.default_rng(5)
    records = [ShardRecord(f"orig{i:03d}", (0.05 * noise.standard_normal(16000)).astype(np.float32), "a b", "yy")
               for i in range(count)]
    write_shar(records, root, shard_size=10)
    return root


@pytest.mark.parametrize("weight", [0.25, 0.75])
def test_mux_draws_from_both_sources_in_the_given_ratio(tmp_path_factory, weight):
    root = tmp_path_factory.mktemp("mux")
    new = make_tiny_corpus(root / "new", num_train=96, num_dev=1)["train"]
    original = _original_corpus(root / "original", count=20)
    args = _args(CTC, ["--train-shar-dirs", str(new), "--use-mux", "True", "--mux-shar-dirs", str(original),
                       "--mux-weight", str(weight), "--preset", "tiny"])
    ids = [cut.id for cut in data_module.AsrDataModule(args).train_cuts()]
    new_ids = [i for i in ids if i.startswith("utt")]
    assert sorted(new_ids) == [f"utt{i:03d}" for i in range(96)]  # an epoch: the new data once
    share, sigma = len(new_ids) / len(ids), math.sqrt(weight * (1 - weight) / len(ids))
    assert abs(share - weight) < 3 * sigma, (len(new_ids), len(ids))
    if weight == 0.25:  # 3 original cuts per new one: the 20 original cuts come round again and again
        drawn = [i for i in ids if i.startswith("orig")]
        assert len(drawn) > 200 and {i.split("_repeat")[0] for i in drawn} == {f"orig{i:03d}" for i in range(20)}


# -- the result, decoded -------------------------------------------------------------------------


def test_ctc_decode_reads_the_fine_tuned_run(corpus, sources, tmp_path):
    exp = tmp_path / "exp"
    original = _original_corpus(tmp_path / "original", count=8)
    _train(CTC, _flags(corpus, exp, *_finetune(sources["checkpoint"], "--num-epochs", "2", "--use-mux", "True",
                                               "--mux-shar-dirs", str(original))))
    result = subprocess.run(
        [sys.executable, "zipformer_crctc/ctc_decode.py", "--exp-dir", str(exp), "--epoch", "2", "--avg", "2",
         "--use-averaged-model", "False", "--device", "cpu", "--num-workers", "0", "--res-dir", str(tmp_path / "res"),
         "--test-shar-dirs", f"dev={corpus['dev']}"],
        capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr[-2000:]
    errs = (tmp_path / "res" / "errs-dev-epoch-2-avg-2.txt").read_text()
    assert errs.startswith("%PER")
