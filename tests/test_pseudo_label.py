"""Pseudo-labelling (zipa/train/pseudo_label.py, zipformer_*/pseudo_label.py): shar out that plain
lhotse and the training recipes read, the Transcriber's hypotheses with their confidences,
filters counted per reason, flac audio, resuming after a kill, and ranks splitting the shards."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from lhotse import CutSet
from shar_checks import check_plain_lhotse_reads
from tiny_models import speechlike, tiny_model_path
from training_utils import make_tiny_corpus, training_flags

from zipa.audio.load import load_audio
from zipa.audio.files import find_audio
from zipa.data import module as data_module
from zipa.data.filters import CutFilter
from zipa.data.labels import LabelEncoder
from zipa.train.pseudo_label import (
    CRASH_ENV,
    Filters,
    PseudoLabelError,
    Settings,
    dropped_path,
    label_jobs,
    plan_batches,
    plan_jobs,
    prepare,
    pseudo_label,
    run_params,
    summary_path,
    work_dir,
)
from zipa.data.shar import ShardRecord, discover_shards, quantize_pcm16, write_shar
from zipa.inference.transcriber import Transcriber
from zipa.train.checkpoints import load_training_checkpoint
from zipa.train.recipe import run_training

REPO = Path(__file__).resolve().parents[1]
MAX_DURATION = 5.0
NO_FILTERS = Filters(min_confidence=0.0, min_tokens_per_second=0.0, max_tokens_per_second=1e9)
NO_FILTER_FLAGS = ["--min-confidence", "0", "--min-tokens-per-second", "0", "--max-tokens-per-second", "1e9"]
# Seconds of the unlabelled utterances, 3 per shard; 0.05 s is too short for the encoder.
SECONDS = [2.2, 0.6, 1.4, 3.0, 0.05, 1.0, 2.6, 1.2, 1.8]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return tiny_model_path(tmp_path_factory, "ctc")


@pytest.fixture(scope="module")
def transcriber(model):
    return Transcriber.from_checkpoint(model, device="cpu")


@pytest.fixture(scope="module")
def unlabeled(tmp_path_factory):
    """Three shards of unlabelled speech-like cuts (16 kHz 16-bit flac); every other one has a language."""
    records = [ShardRecord(f"u{i}", speechlike(s, 100 + i), "", "xx" if i % 2 else None) for i, s in enumerate(SECONDS)]
    folder = tmp_path_factory.mktemp("unlabeled") / "unlabeled"
    write_shar(records, folder, shard_size=3, require_text=False)
    return folder


@pytest.fixture(scope="module")
def base(unlabeled, transcriber, model, tmp_path_factory):
    """One uninterrupted in-process run without confidence or rate filters: (out_dir, summary).
    On one thread, as `run_script`'s subprocesses: the confidences written must be equal to the
    last digit, and another thread count sums the matrix products in another order."""
    out = tmp_path_factory.mktemp("base") / "pseudo"
    settings = Settings(out, max_duration=MAX_DURATION, filters=NO_FILTERS, progress="none")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return out, pseudo_label(plan_jobs([unlabeled]), transcriber, settings, model=str(model))
    finally:
        torch.set_num_threads(threads)


def cuts_by_id(folder: Path) -> dict:
    return {cut.id: cut for cut in CutSet.from_shar(in_dir=folder)}


def expected_labels(transcriber: Transcriber, folder: Path, max_duration=MAX_DURATION, batch_size=None) -> dict:
    """id -> (text, confidence, mean log-prob): each input shard's cuts batched by `plan_batches`,
    decoded by `Transcriber.transcribe`, and the confidences computed here from the CTC
    log-probs of the same batches (greedy path: runs of equal argmax, blank runs left out)."""
    out = {}
    for cuts_file, recording in zip(*discover_shards(folder).values()):
        shard = CutSet.from_shar(fields={"cuts": [cuts_file], "recording": [recording]})
        cuts = [c for c in shard if c.duration >= 0.1]
        for batch in plan_batches([c.duration for c in cuts], max_duration, batch_size):
            audio = [cuts[b].load_audio()[0] for b in batch]
            texts = [" ".join(words) for words in transcriber.transcribe(audio)]
            if not transcriber.uses_ctc:
                out.update({cuts[b].id: (text, None, None) for b, text in zip(batch, texts)})
                continue
            feats, lens = transcriber.features(audio)
            with torch.inference_mode():
                encoder_out, encoder_lens = transcriber.model.forward_encoder(feats, lens)
                log_probs = transcriber.model.ctc_output(encoder_out)
            for b, text, lp, n in zip(batch, texts, log_probs, encoder_lens.tolist()):
                best, probs = lp[:n].argmax(-1).tolist(), lp[:n].max(-1).values.exp().double()
                starts = [t for t in range(n) if t == 0 or best[t] != best[t - 1]]
                runs = [probs[s:e].mean().item() for s, e in zip(starts, starts[1:] + [n]) if best[s] != 0]
                confidence = float(np.mean(runs)) if runs else None
                out[cuts[b].id] = (text, confidence, float(np.mean(np.log(runs))) if runs else None)
    return out


def assert_same_output(a: Path, b: Path) -> None:
    """Same shard files, same cut manifests line by line, same audio."""
    names = sorted(p.name for p in a.iterdir())
    assert names == sorted(p.name for p in b.iterdir())
    for name in names:
        if name.endswith(".jsonl.gz"):
            assert gzip.open(a / name, "rt").read() == gzip.open(b / name, "rt").read(), name
    cuts_a, cuts_b = cuts_by_id(a), cuts_by_id(b)
    assert cuts_a.keys() == cuts_b.keys()
    for cut_id in cuts_a:
        assert np.array_equal(cuts_a[cut_id].load_audio(), cuts_b[cut_id].load_audio())


def without_out_dir(summary: dict) -> dict:
    return {k: v for k, v in summary.items() if k != "out_dir"}


def run_script(*args, env=None, recipe="zipformer_crctc"):
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run([sys.executable, f"{recipe}/pseudo_label.py", *map(str, args)],
                          capture_output=True, text=True, cwd=REPO, env=env)


# ---------------------------------------------------------------------------------------------


def test_batches_are_longest_first_within_both_limits():
    seconds = [1.0, 3.0, 0.5, 3.0, 2.0, 6.0]
    batches = plan_batches(seconds, max_duration=6.0)
    assert batches == [[5], [1, 3], [4, 0, 2]]  # 6 s alone; 2 x 3 s; 3 x 2 s padded
    assert plan_batches(seconds, max_duration=6.0, batch_size=2) == [[5], [1, 3], [4, 0], [2]]
    assert plan_batches(seconds, batch_size=4) == [[5, 1, 3, 4], [0, 2]]
    assert sorted(i for b in plan_batches(seconds) for i in b) == list(range(6))


def test_output_is_plain_shar_with_the_transcribers_labels(base, unlabeled, transcriber):
    out, summary = base
    inputs = cuts_by_id(unlabeled)
    check_plain_lhotse_reads(out, summary["kept"]["cuts"])  # shard files only; lhotse reads them
    assert summary_path(out).is_file() and dropped_path(out).is_file() and work_dir(out).is_dir()
    cuts = cuts_by_id(out)
    expected = expected_labels(transcriber, unlabeled)
    assert set(cuts) == {k for k, (text, _, _) in expected.items() if text}
    for cut_id, cut in cuts.items():
        text, confidence, mean_log_prob = expected[cut_id]
        (sup,) = cut.supervisions
        assert sup.text == text and sup.duration == cut.duration == inputs[cut_id].duration
        assert sup.custom["confidence"] == pytest.approx(confidence, abs=2e-6)
        assert sup.custom["mean_log_prob"] == pytest.approx(mean_log_prob, abs=2e-6)
        assert sup.custom["tokens_per_second"] == pytest.approx(len(text.replace(" ", "")) / cut.duration, abs=1e-4)
        assert sup.language == inputs[cut_id].supervisions[0].language  # "xx" or None, as given
        # 16-bit flac both ways: exactly the input's samples.
        assert np.array_equal(cut.load_audio(), inputs[cut_id].load_audio())
    with tarfile.open(out / "recording.000000.tar") as tar:
        assert all(name.endswith(".flac") for name in tar.getnames() if not name.endswith(".json"))
    # Every input is accounted for; u4 (0.05 s) is too short for the encoder.
    assert summary["kept"]["cuts"] + summary["dropped"]["cuts"] == len(SECONDS)
    assert summary["dropped"]["by_reason"]["too_short"] == {"cuts": 1, "hours": round(0.05 / 3600, 6)}
    assert summary["kept"]["hours"] == pytest.approx(sum(c.duration for c in cuts.values()) / 3600, abs=1e-6)
    assert json.loads(summary_path(out).read_text()) == summary


def test_filters_drop_by_confidence_and_token_rate_and_count_them(base, unlabeled, transcriber, model, tmp_path):
    labelled = cuts_by_id(base[0])
    custom = {k: c.supervisions[0].custom for k, c in labelled.items()}
    rates = sorted(c["tokens_per_second"] for c in custom.values())
    confidences = sorted(c["confidence"] for c in custom.values())
    filters = Filters(min_confidence=(confidences[2] + confidences[3]) / 2,
                      min_tokens_per_second=(rates[0] + rates[1]) / 2,
                      max_tokens_per_second=(rates[-1] + rates[-2]) / 2)

    def reason(c):  # the documented order: token rate before confidence
        if c["tokens_per_second"] < filters.min_tokens_per_second:
            return "too_few_tokens_per_second"
        if c["tokens_per_second"] > filters.max_tokens_per_second:
            return "too_many_tokens_per_second"
        return "low_confidence" if c["confidence"] < filters.min_confidence else None

    expected = {k: reason(c) for k, c in custom.items()}
    out = tmp_path / "filtered"
    settings = Settings(out, max_duration=MAX_DURATION, filters=filters, progress="none")
    summary = pseudo_label(plan_jobs([unlabeled]), transcriber, settings, model=str(model))
    assert set(cuts_by_id(out)) == {k for k, r in expected.items() if r is None}
    seconds = {c.id: c.duration for c in cuts_by_id(unlabeled).values()}
    by_reason = dict(base[1]["dropped"]["by_reason"])  # too_short (and any empty) as before
    for r in {r for r in expected.values() if r}:
        ids = [k for k, v in expected.items() if v == r]
        by_reason[r] = {"cuts": len(ids), "hours": round(sum(seconds[k] for k in ids) / 3600, 6)}
    assert summary["dropped"]["by_reason"] == by_reason
    assert set(by_reason) >= {"too_few_tokens_per_second", "too_many_tokens_per_second", "low_confidence"}
    assert summary["kept"]["cuts"] + summary["dropped"]["cuts"] == len(SECONDS)
    rows = [line.split("\t") for line in dropped_path(out).read_text().splitlines()[1:]]
    assert sorted((r[0], r[1]) for r in rows if r[1] in expected.values()) == sorted(
        (k, v) for k, v in expected.items() if v)


def test_empty_hypotheses_are_dropped(unlabeled, model, tmp_path):
    silent = Transcriber.from_checkpoint(model, device="cpu")
    with torch.no_grad():
        silent.model.ctc_output[1].bias[0] += 100.0  # blank everywhere
    settings = Settings(tmp_path / "out", filters=NO_FILTERS, progress="none")
    summary = pseudo_label(plan_jobs([unlabeled]), silent, settings, model="silent")
    assert summary["kept"]["cuts"] == 0 and summary["shards_written"] == 0
    assert summary["dropped"]["by_reason"]["empty"]["cuts"] == len(SECONDS) - 1
    assert list((tmp_path / "out").iterdir()) == []


def test_audio_folders_resampled_mixed_and_quantised(model, transcriber, tmp_path):
    audio = tmp_path / "audio"
    (audio / "a b").mkdir(parents=True)
    stereo = np.stack([speechlike(1.5, 1, rate=22050), 0.5 * speechlike(1.5, 2, rate=22050)], axis=1)
    sf.write(audio / "a b" / "one.wav", stereo, 22050, subtype="FLOAT")
    sf.write(audio / "two.flac", speechlike(1.1, 3), 16000, subtype="PCM_24")
    (audio / "broken.wav").write_bytes(b"RIFF not really audio")
    files, errors = find_audio([str(audio)])
    assert errors == [] and len(files) == 3
    settings = Settings(tmp_path / "out", batch_size=1, filters=NO_FILTERS, language="yy", progress="none")
    summary = pseudo_label(plan_jobs(audio_files=files), transcriber, settings, model=str(model))
    cuts = cuts_by_id(tmp_path / "out")
    assert set(cuts) == {"a_b__one", "two"}
    assert summary["dropped"]["by_reason"] == {"unreadable": {"cuts": 1, "hours": 0.0}}
    for cut_id, path in (("a_b__one", audio / "a b" / "one.wav"), ("two", audio / "two.flac")):
        cut = cuts[cut_id]
        samples = load_audio(path)  # 16 kHz mono float, as every front end reads it
        assert cut.sampling_rate == 16000 and cut.custom["source"] == str(path)
        assert np.array_equal(cut.load_audio()[0], quantize_pcm16(samples) / np.float32(32768))
        assert cut.supervisions[0].text == " ".join(transcriber.transcribe([path])[0])
        assert cut.supervisions[0].language == "yy"


def test_killed_run_resumes_to_the_uninterrupted_output(base, unlabeled, model, tmp_path):
    out = tmp_path / "pseudo"
    flags = ["--shar-dirs", unlabeled, "--model-path", model, "--out-dir", out, "--device", "cpu",
             "--max-duration", MAX_DURATION, "--progress", "log", *NO_FILTER_FLAGS]
    killed = run_script(*flags, env={CRASH_ENV: "1"})  # dies while publishing the second shard
    assert killed.returncode == 86, killed.stderr[-2000:]
    assert sorted(p.name for p in out.iterdir()) == ["cuts.000000.jsonl.gz", "recording.000000.tar",
                                                     "recording.000001.tar"]
    assert not summary_path(out).exists()
    record = work_dir(out) / "done" / "shard.000000.json"
    before = (record.stat().st_mtime_ns, (out / "cuts.000000.jsonl.gz").stat().st_ino)

    resumed = run_script(*flags)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "1 of 3 shards already done" in resumed.stderr
    assert "shard 0:" not in resumed.stderr and "shard 1: kept" in resumed.stderr
    assert (record.stat().st_mtime_ns, (out / "cuts.000000.jsonl.gz").stat().st_ino) == before
    assert_same_output(out, base[0])
    assert without_out_dir(json.loads(summary_path(out).read_text())) == without_out_dir(base[1])
    assert f"kept {base[1]['kept']['cuts']} cuts" in resumed.stdout

    again = run_script(*flags)  # finished: nothing is decoded again
    assert again.returncode == 0 and "3 of 3 shards already done" in again.stderr


def test_two_ranks_split_the_shards_and_write_the_one_rank_output(base, unlabeled, model, tmp_path):
    out = tmp_path / "pseudo"
    result = run_script("--shar-dirs", unlabeled, "--model-path", model, "--out-dir", out, "--device", "cpu",
                        "--max-duration", MAX_DURATION, "--world-size", 2, "--progress", "log", *NO_FILTER_FLAGS)
    assert result.returncode == 0, result.stderr[-2000:]
    for rank, shard in ((0, 0), (1, 1), (0, 2)):  # shard k on rank k % 2, and on no other
        assert f"rank {rank}: shard {shard}: kept" in result.stderr
        assert result.stderr.count(f"shard {shard}: kept") == 1
    assert_same_output(out, base[0])
    assert without_out_dir(json.loads(summary_path(out).read_text())) == without_out_dir(base[1])


def test_other_settings_or_foreign_folders_are_refused(base, unlabeled, transcriber, model, tmp_path):
    out, summary = base
    jobs = plan_jobs([unlabeled])
    same = Settings(out, max_duration=MAX_DURATION, filters=NO_FILTERS, progress="none")
    assert pseudo_label(jobs, transcriber, same, model=str(model)) == summary
    assert label_jobs(jobs, transcriber, same) == 0  # all shards already done
    other = Settings(out, max_duration=MAX_DURATION, progress="none")
    with pytest.raises(PseudoLabelError, match="other settings \\(filters differ\\)"):
        prepare(out, run_params(other, jobs, str(model)))
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(PseudoLabelError, match="not shar shards"):
        prepare(foreign, run_params(same, jobs, str(model)), overwrite=True)
    assert (foreign / "notes.txt").read_text() == "mine"


def test_training_reads_the_output_as_unsupervised_and_as_supervised_data(base, tmp_path):
    out = base[0]
    corpus = make_tiny_corpus(tmp_path / "corpus", num_train=8, num_dev=2)
    defaults = dict(model_defaults=dict(use_ctc=True, use_transducer=False),
                    training_defaults=dict(use_cr_ctc=True, enable_spec_aug=False))
    unsup = tmp_path / "unsup"
    run_training("test", data_module.AsrDataModule, 1, argv=training_flags(
        corpus, unsup, "--num-epochs", "1", "--use-unsup-cr-ctc", "True", "--unsup-shar-dirs", str(out)), **defaults)
    checkpoint = load_training_checkpoint(unsup / "epoch-1.pt")
    assert checkpoint["batch_idx_train"] > 0 and checkpoint["unsup_sampler"] is not None
    # One pseudo-labelled batch per training step; the training filter keeps every cut.
    stats = checkpoint["unsup_sampler"]["diagnostics"]["stats_per_epoch"][0]
    assert stats["kept_batches"] == checkpoint["batch_idx_train"]
    assert all(CutFilter(LabelEncoder())(cut) for cut in cuts_by_id(out).values())

    sup = tmp_path / "sup"
    run_training("test", data_module.AsrDataModule, 1, argv=training_flags(
        {"train": out, "dev": corpus["dev"]}, sup, "--num-epochs", "1"), **defaults)
    assert load_training_checkpoint(sup / "epoch-1.pt")["batch_idx_train"] > 0


def test_transducer_twin_labels_with_the_transducer_head(unlabeled, tmp_path_factory, tmp_path):
    model = tiny_model_path(tmp_path_factory, "transducer")
    out = tmp_path / "pseudo"
    result = run_script("--shar-dirs", unlabeled, "--model-path", model, "--out-dir", out, "--device", "cpu",
                        "--batch-size", 2, "--progress", "none", *NO_FILTER_FLAGS, recipe="zipformer_transducer")
    assert result.returncode == 0, result.stderr[-2000:]
    transcriber = Transcriber.from_checkpoint(model, device="cpu")
    assert not transcriber.uses_ctc
    expected = expected_labels(transcriber, unlabeled, max_duration=None, batch_size=2)
    cuts = cuts_by_id(out)
    assert cuts and set(cuts) == {k for k, (text, _, _) in expected.items() if text}
    for cut_id, cut in cuts.items():
        custom = cut.supervisions[0].custom
        assert cut.supervisions[0].text == expected[cut_id][0]
        assert 0 < custom["confidence"] <= 1 and custom["mean_log_prob"] <= np.log(custom["confidence"]) + 1e-6
