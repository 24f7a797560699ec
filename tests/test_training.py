"""Training: exact resume, non-finite batches, averaging, and a loss that falls."""

from pathlib import Path

import pytest
import torch
from training_utils import make_tiny_corpus, training_flags

from zipa.data import module as data_module
from zipa.train.checkpoints import (
    AveragedModel,
    average_state_dicts,
    averaged_weights,
    load_training_checkpoint,
)
from zipa.train.recipe import run_training


def _train(flags, output_downsampling_factor=1, **defaults):
    run_training(
        "test", data_module.AsrDataModule, output_downsampling_factor,
        model_defaults=defaults.get("model", dict(use_ctc=True, use_transducer=False)),
        training_defaults=defaults.get("training", dict(use_cr_ctc=True, enable_spec_aug=False)),
        argv=flags,
    )


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_tiny_corpus(tmp_path_factory.mktemp("corpus"))


def _weights(path: Path):
    return load_training_checkpoint(path)["model"]


def test_resume_from_a_batch_checkpoint_is_exact(corpus, tmp_path):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    _train(training_flags(corpus, straight, "--num-epochs", "1", "--save-every-n", "2"))
    batches = load_training_checkpoint(straight / "epoch-1.pt")["batch_idx_train"]
    assert batches >= 4, "the corpus should give several batches"

    resumed.mkdir()
    (resumed / "checkpoint-2.pt").write_bytes((straight / "checkpoint-2.pt").read_bytes())
    _train(training_flags(corpus, resumed, "--num-epochs", "1", "--save-every-n", "2", "--start-batch", "2"))

    a, b = _weights(straight / "epoch-1.pt"), _weights(resumed / "epoch-1.pt")
    assert load_training_checkpoint(resumed / "epoch-1.pt")["batch_idx_train"] == batches
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    # The parameters did move after the checkpoint.
    moved = _weights(straight / "checkpoint-2.pt")
    assert any(not torch.equal(moved[k], a[k]) for k in a if a[k].is_floating_point())


def _assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_resume_with_the_unsupervised_stream_is_exact(corpus, tmp_path_factory, tmp_path):
    """Noisy-student training (--use-unsup-cr-ctc): the pseudo-labelled stream's sampler
    position is in each checkpoint, so a resumed run reads the same unlabelled batches as the
    run that never stopped, across an epoch boundary too (the stream is not restarted per
    epoch, and epoch checkpoints hold its position as well)."""
    unsup = make_tiny_corpus(tmp_path_factory.mktemp("unsup"), num_train=12, num_dev=1, seed=1)["train"]
    flags = ("--num-epochs", "2", "--save-every-n", "3", "--use-unsup-cr-ctc", "True",
             "--unsup-shar-dirs", str(unsup))
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    _train(training_flags(corpus, straight, *flags))
    checkpoint = load_training_checkpoint(straight / "checkpoint-3.pt")
    assert checkpoint["unsup_sampler"] is not None and checkpoint["sampler"] is not None
    assert load_training_checkpoint(straight / "epoch-1.pt")["unsup_sampler"] is not None

    resumed.mkdir()
    (resumed / "checkpoint-3.pt").write_bytes((straight / "checkpoint-3.pt").read_bytes())
    _train(training_flags(corpus, resumed, *flags, "--start-batch", "3"))
    _assert_same_weights(_weights(straight / "epoch-2.pt"), _weights(resumed / "epoch-2.pt"))

    # Without the unsupervised position (a checkpoint from before it was saved) the run still
    # resumes, with a warning, but the stream restarts and the weights come out different.
    old = tmp_path / "old"
    old.mkdir()
    checkpoint["unsup_sampler"] = None
    torch.save(checkpoint, old / "checkpoint-3.pt")
    _train(training_flags(corpus, old, *flags, "--start-batch", "3"))
    logs = "".join(p.read_text() for p in (old / "log").iterdir())
    assert "holds no position of the unsupervised" in logs
    a, b = _weights(straight / "epoch-2.pt"), _weights(old / "epoch-2.pt")
    assert any(not torch.equal(a[k], b[k]) for k in a if a[k].is_floating_point())


def test_non_finite_loss_is_skipped_and_counted(corpus, tmp_path, monkeypatch):
    import zipa.train.loop as loop

    real = loop.compute_loss
    calls = {"n": 0}

    def sometimes_nan(*args, **kwargs):
        loss, info = real(*args, **kwargs)
        calls["n"] += 1
        return (loss * float("nan"), info) if calls["n"] == 2 else (loss, info)

    monkeypatch.setattr(loop, "compute_loss", sometimes_nan)
    _train(training_flags(corpus, tmp_path, "--num-epochs", "1"))
    weights = _weights(tmp_path / "epoch-1.pt")
    assert all(torch.isfinite(v).all() for v in weights.values() if v.is_floating_point())
    logs = "".join(p.read_text() for p in (tmp_path / "log").iterdir())
    assert "non-finite loss, skipped (1 so far)" in logs


def test_averaging_equals_mean_of_checkpoints(corpus, tmp_path):
    _train(training_flags(corpus, tmp_path, "--num-epochs", "3"))
    average = averaged_weights(tmp_path, avg=2, epoch=3)
    w2, w3 = _weights(tmp_path / "epoch-2.pt"), _weights(tmp_path / "epoch-3.pt")
    for key, value in average.items():
        if value.is_floating_point():
            expected = ((w2[key].double() + w3[key].double()) / 2).to(value.dtype)
            assert torch.allclose(value, expected, atol=0, rtol=0), key


def test_model_avg_difference_averaging(tmp_path):
    """icefall's --use-averaged-model: from the running averages of two checkpoints, the
    average of the weights over the batches between them."""
    model = torch.nn.Linear(2, 1, bias=False)
    history = [torch.tensor([[float(i), 2.0 * i]]) for i in range(1, 7)]
    avg = AveragedModel(model)
    saved = {}
    for step, w in enumerate(history, start=1):
        model.weight.data = w
        if step == 1:
            avg = AveragedModel(model)
        else:
            avg.update(model, step, average_period=1)
        if step in (2, 6):
            path = tmp_path / f"checkpoint-{step}.pt"
            torch.save({"model": model.state_dict(), "model_avg": {k: v.clone() for k, v in avg.state_dict().items()},
                        "batch_idx_train": step}, path)
            saved[step] = path
    from zipa.train.checkpoints import average_with_model_avg

    result = average_with_model_avg(saved[2], saved[6])["weight"]
    expected = torch.stack(history[2:6]).mean(dim=0)  # weights after batches 3..6
    assert torch.allclose(result.double(), expected.double(), atol=1e-6)


def test_average_state_dicts_integers_floor():
    a = {"w": torch.tensor([1.0, 3.0]), "n": torch.tensor(3)}
    b = {"w": torch.tensor([2.0, 6.0]), "n": torch.tensor(4)}
    out = average_state_dicts([a, b])
    assert torch.equal(out["w"], torch.tensor([1.5, 4.5])) and int(out["n"]) == 3
