"""User errors in the recipes end in one line naming the flag and the fix, with exit status 2
and no traceback; what this project lacks (k2 decoding, LMs) is answered the same way; a bug
keeps its traceback."""

import subprocess
import sys

import pytest
import torch
from conftest import REPO
from training_utils import make_tiny_corpus, training_flags

from zipa.data import module as data_module
from zipa.train.test_sets import CTC_DECODING, TRANSDUCER_DECODING
from zipa.train.test_sets import main as decode
from zipa.train.recipe import ZIPA_MODEL_DEFAULTS, run_training


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_tiny_corpus(tmp_path_factory.mktemp("corpus"))


def one_line_exit(capsys, call) -> str:
    with pytest.raises(SystemExit) as stopped:
        call()
    err = capsys.readouterr().err.strip()
    assert stopped.value.code == 2, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


def train(argv):
    return lambda: run_training("test", data_module.AsrDataModule, 1, ZIPA_MODEL_DEFAULTS, {}, argv=argv)


def ctc_decode(argv):
    return lambda: decode("test", data_module.AsrDataModule, output_downsampling_factor=1, argv=argv, **CTC_DECODING)


def rnnt_decode(argv):
    return lambda: decode("test", data_module.AsrDataModule, output_downsampling_factor=2, argv=argv,
                          **TRANSDUCER_DECODING)


def test_the_readme_training_command_without_data_flags_says_which_flag(tmp_path):
    """As a user types it (ZIPA hard-codes its data): one line, exit status 2, no traceback."""
    result = subprocess.run([sys.executable, "zipformer_crctc/train.py", "--exp-dir", str(tmp_path), "--use-ctc",
                             "True", "--use-transducer", "False", "--use-cr-ctc", "True", "--enable-spec-aug", "False"],
                            capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        "train.py: error: no training data: give --train-shar-dirs DIR [DIR ...] (lhotse shar folders; ZIPA's "
        "hard-coded data paths are not built in)")


def test_resuming_from_a_checkpoint_that_is_not_there_or_truncated(capsys, corpus, tmp_path):
    err = one_line_exit(capsys, train(training_flags(corpus, tmp_path, "--start-batch", "500000")))
    assert "--start-batch 500000: no checkpoint-500000.pt in" in err and "--start-batch 0 to start afresh" in err
    torch.save({"model": {"w": torch.zeros(1000)}}, tmp_path / "epoch-2.pt")
    data = (tmp_path / "epoch-2.pt").read_bytes()
    (tmp_path / "epoch-2.pt").write_bytes(data[: len(data) // 2])
    err = one_line_exit(capsys, train(training_flags(corpus, tmp_path, "--start-epoch", "3")))
    assert "--start-epoch 3:" in err and "epoch-2.pt is truncated" in err


@pytest.mark.parametrize("flags, expected", [
    (("--num-encoder-layers", "1,1", "--encoder-dim", "32,48,64"),
     "--downsampling-factor 1,2,4,8,4,2 has 6 values but --num-encoder-layers 1,1 has 2 stacks"),
    (("--encoder-unmasked-dim", "64"), "--encoder-unmasked-dim: 64 at stack 0 exceeds --encoder-dim 32"),
    (("--use-cr-ctc", "True"), "--use-cr-ctc True regularises the CTC head: give --use-ctc True"),
    (("--use-ctc", "False", "--use-transducer", "False"), "--use-ctc and --use-transducer are both False"),
    (("--use-ctc", "True", "--use-cr-ctc", "True", "--enable-spec-aug", "True"),
     "--use-cr-ctc True applies SpecAugment inside the model: give --enable-spec-aug False"),
    (("--concatenate-cuts", "True"), "--concatenate-cuts True: concatenating cuts into batches is not supported"),
])
def test_contradicting_flags(capsys, corpus, tmp_path, flags, expected):
    err = one_line_exit(capsys, train(training_flags(corpus, tmp_path, *flags)))
    assert expected in err


@pytest.fixture(scope="module")
def exp(tmp_path_factory, corpus):
    """checkpoint-1.pt of a one-batch CTC run, and the same as epoch-1.pt."""
    exp = tmp_path_factory.mktemp("exp")
    run_training("test", data_module.AsrDataModule, 1, ZIPA_MODEL_DEFAULTS, {},
                 argv=training_flags(corpus, exp, "--use-ctc", "True", "--use-transducer", "False",
                                     "--max-batches", "1"))
    (exp / "epoch-1.pt").write_bytes((exp / "checkpoint-1.pt").read_bytes())
    return exp


@pytest.mark.parametrize("flags, expected", [
    (("--seed", "8"), "--start-batch 1: checkpoint-1.pt stopped mid-epoch in a run with --seed 7, whose batches "
                      "--seed 8 cannot continue: resume with --seed 7"),
    (("--world-size", "2"), "--start-batch 1: checkpoint-1.pt stopped mid-epoch on 1 rank(s), and its sampler cannot "
                            "split the rest of the epoch over 2: resume with --world-size 1"),
    (("--dev-shar-dirs", "dev=/nonexistent"), "--dev-shar-dirs dev=/nonexistent: no such folder; give lhotse shar "
                                              "folders"),
])
def test_resuming_mid_epoch_needs_the_same_sampler_and_data_that_exists(capsys, corpus, exp, flags, expected):
    argv = training_flags(corpus, exp, "--use-ctc", "True", "--start-batch", "1", *flags)
    assert expected in one_line_exit(capsys, train(argv))


@pytest.mark.parametrize("flags, expected", [
    (("--test-shar-dirs", "/nonexistent"), "--test-shar-dirs /nonexistent: no such folder"),
    (("--iter", "100", "--avg", "10"), "--iter 100 --avg 10 --use-averaged-model True needs 11 checkpoint-N.pt with "
                                       "N <= 100 in {exp}, found 1 (newest: checkpoint-1.pt): give "
                                       "--use-averaged-model False"),
    (("--iter", "100", "--avg", "2", "--use-averaged-model", "False"), "found 1 (newest: checkpoint-1.pt): lower --avg to 1"),
    (("--epoch", "3", "--avg", "1", "--use-averaged-model", "False"), "--epoch 3 --avg 1: no epoch-3.pt in {exp}; "
                                                                      "that folder holds epoch-1.pt"),
    (("--epoch", "1", "--avg", "1"), "--epoch 1 --avg 1 --use-averaged-model True: no epoch-0.pt"),
    (("--model-path", "{exp}/nothing.pth"), "--model-path: "),
    (("--decoding-method", "1best"), "--decoding-method 1best: lattice decoding with an HLG graph needs k2's FSA "
                                     "machinery, which this project does not use; use one of ctc-decoding, "
                                     "ctc-greedy-search, prefix-beam-search"),
    (("--nnlm-scale", "0.5"), "--nnlm-scale 0.5: neural LM rescoring: LM decoding is not supported here"),
])
def test_ctc_decode_errors(capsys, corpus, exp, flags, expected):
    argv = ["--exp-dir", str(exp), "--test-shar-dirs", str(corpus["dev"]), "--num-workers", "0"]
    argv += [f.format(exp=exp) for f in flags]
    assert expected.format(exp=exp) in one_line_exit(capsys, ctc_decode(argv))


def test_ctc_decode_without_test_sets(capsys, exp):
    err = one_line_exit(capsys, ctc_decode(["--exp-dir", str(exp), "--iter", "1", "--avg", "1"]))
    assert "no test sets: give --test-shar-dirs NAME=DIR" in err


@pytest.mark.parametrize("flags, expected", [
    (("--decoding-method", "fast_beam_search", "--beam", "20.0", "--max-contexts", "8", "--max-states", "64"),
     "--decoding-method fast_beam_search: fast_beam_search needs k2's FSA machinery"),
    (("--decoding-method", "modified_beam_search", "--use-shallow-fusion", "True", "--lm-type", "rnn"),
     "--use-shallow-fusion True: shallow fusion: LM decoding is not supported here (no n-gram or neural LM); "
     "decode with --decoding-method greedy_search or modified_beam_search"),
    (("--max-sym-per-frame", "2"), "--max-sym-per-frame 2: greedy_search here emits at most one symbol per frame"),
    (("--context-file", "words.txt"), "--context-file words.txt: contextual biasing"),
    (("--decoding-method", "beam_search"), "--decoding-method beam_search: icefall's one-hypothesis-at-a-time"),
])
def test_icefall_transducer_decode_lines_are_answered(capsys, corpus, exp, flags, expected):
    argv = [*flags, "--exp-dir", str(exp), "--epoch", "1", "--avg", "1", "--test-shar-dirs", str(corpus["dev"])]
    assert expected in one_line_exit(capsys, rnnt_decode(argv))


def test_a_bug_keeps_its_traceback(corpus, tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr("zipa.train.loop.Trainer.run", broken)
    with pytest.raises(RuntimeError, match="a bug"):
        train(training_flags(corpus, tmp_path, "--use-ctc", "True"))()
