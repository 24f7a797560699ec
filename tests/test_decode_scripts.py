"""The recipes' averaging and decode scripts end to end on a tiny trained model."""

import json
import subprocess
import sys

import pytest
from conftest import REPO
from training_utils import make_tiny_corpus, training_flags

from zipa.data import module as data_module
from zipa.train.recipe import run_training


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("decode")
    corpus = make_tiny_corpus(root / "corpus")
    exp = root / "exp"
    run_training("test", data_module.AsrDataModule, 1, dict(use_ctc=True, use_transducer=False),
                 dict(use_cr_ctc=True, enable_spec_aug=False), argv=training_flags(corpus, exp, "--num-epochs", "2"))
    return corpus, exp


def _run(*args):
    result = subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr[-2000:]
    return result


def test_average_then_decode_writes_icefall_results(trained, tmp_path):
    corpus, exp = trained
    averaged = tmp_path / "avg.pth"
    _run("zipformer_crctc/generate_averaged_model.py", "--exp-dir", exp, "--epoch", "2", "--avg", "2",
         "--use-averaged-model", "False", "--output", averaged)
    res = tmp_path / "res"
    out = _run("zipformer_crctc/ctc_decode.py", "--model-path", averaged, "--device", "cpu", "--num-workers", "0",
               "--decoding-method", "ctc-greedy-search,prefix-beam-search", "--res-dir", res,
               "--test-shar-dirs", f"dev={corpus['dev']}")
    names = sorted(p.name for p in res.iterdir())
    for method in ("ctc-greedy-search", "prefix-beam-search"):
        assert f"recogs-dev-{method}-avg.txt" in names and f"errs-dev-{method}-avg.txt" in names
        metrics = json.loads((res / f"metrics-dev-{method}-avg.json").read_text())
        assert metrics["decoding"] == method and "overall" in metrics
    recogs = (res / "recogs-dev-ctc-greedy-search-avg.txt").read_text()
    assert recogs.count("ref=") == 4 and recogs.count("hyp=") == 4
    assert "dev ctc-greedy-search" in out.stdout


def test_decode_from_exp_dir_with_epoch_and_avg(trained, tmp_path):
    corpus, exp = trained
    _run("zipformer_crctc/ctc_decode.py", "--exp-dir", exp, "--epoch", "2", "--avg", "1", "--use-averaged-model", "True",
         "--device", "cpu", "--num-workers", "0", "--res-dir", tmp_path, "--test-shar-dirs", f"dev={corpus['dev']}")
    assert (tmp_path / "errs-dev-epoch-2-avg-1-use-averaged-model.txt").read_text().startswith("%PER")


def test_transducer_decode_refuses_a_ctc_model(trained, tmp_path):
    corpus, exp = trained
    result = subprocess.run([sys.executable, "zipformer_transducer/decode.py", "--exp-dir", str(exp), "--epoch", "2",
                             "--avg", "1", "--device", "cpu", "--test-shar-dirs", f"dev={corpus['dev']}"],
                            capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 2 and "no transducer head" in result.stderr and "Traceback" not in result.stderr
