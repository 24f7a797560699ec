"""data_module.AsrDataModule and zipa.data (dataset, filters, samplers) on tiny shar sets."""

from __future__ import annotations

import argparse
import logging
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from zipa.audio.features import compute_fbank
from zipa.data.filters import (
    CutFilter,
    count_repeats,
    encoder_output_frames,
    min_output_frames,
    num_feature_frames,
)
from zipa.data.labels import LabelEncoder
from zipa.data.module import AsrDataModule, parse_named_dirs
from zipa.data.shar import ShardRecord, write_shar
from zipa.text.ipa import normalize_ipa
from zipa.text.tokenizer import Tokenizer

TEXTS = ["pa ta", "tʃi ŋo su", "ʃa", "mi nu ka la", "ʔe bo", "fy ɣa"]


def tone(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n) / 16000
    return (0.3 * np.sin(2 * np.pi * (120 + 30 * seed) * t) + 0.02 * rng.standard_normal(n)).astype(np.float32)


def make_set(out: Path, prefix: str, n: int, shard_size: int = 3, lang: str = "xx", seed: int = 0) -> Path:
    records = [
        ShardRecord(
            f"{prefix}{i:02d}", tone(4000 + 800 * ((i * 7) % 11), seed + i), TEXTS[i % len(TEXTS)], lang
        )
        for i in range(n)
    ]
    write_shar(records, out, shard_size=shard_size)
    return out


@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    root = tmp_path_factory.mktemp("shar")
    return {
        "a": make_set(root / "a", "a", 16, shard_size=3, lang="aaa"),
        "b": make_set(root / "b", "b", 8, shard_size=4, lang="bbb", seed=100),
    }


def module(*argv: str, **kwargs) -> AsrDataModule:
    parser = argparse.ArgumentParser()
    AsrDataModule.add_arguments(parser)
    base = ["--num-workers", "0", "--enable-spec-aug", "false", "--perturb-volume", "false"]
    return AsrDataModule(parser.parse_args(base + list(argv)), **kwargs)


def ids(batch) -> list:
    return [c.id for c in batch["supervisions"]["cut"]]


def test_flags_register_and_parse():
    parser = argparse.ArgumentParser()
    parser.add_argument("--seed", type=int, default=7)  # a recipe's own flag is kept
    AsrDataModule.add_arguments(parser)
    args = parser.parse_args(["--train-shar-dirs", "x", "y", "--dev-shar-dirs", "dev=d1", "/p/d2"])
    assert args.seed == 7 and args.train_shar_dirs == ["x", "y"]
    assert args.on_the_fly_feats and args.enable_spec_aug and args.bucketing_sampler
    assert parse_named_dirs(args.dev_shar_dirs) == {"dev": Path("d1"), "d2": Path("/p/d2")}
    with pytest.raises(ValueError, match="two shar folders"):
        parse_named_dirs(["x/dev", "y/dev"])


def test_batch_keys_shapes_and_token_ids(sets):
    dm = module("--train-shar-dirs", str(sets["a"]), "--max-duration", "3", "--drop-last", "false")
    tok = Tokenizer.default()
    seen = []
    for batch in dm.train_dataloaders(dm.train_cuts()):
        inputs, sup = batch["inputs"], batch["supervisions"]
        n = len(sup["cut"])
        assert inputs.dtype == torch.float32 and inputs.ndim == 3 and inputs.shape[0] == n
        assert inputs.shape[2] == 80
        assert set(sup) >= {"text", "token_ids", "language", "sequence_idx", "start_frame", "num_frames", "cut"}
        assert sup["sequence_idx"].tolist() == list(range(n))
        assert sup["start_frame"].tolist() == [0] * n
        assert int(sup["num_frames"].max()) == inputs.shape[1]
        durations = [c.duration for c in sup["cut"]]
        assert durations == sorted(durations, reverse=True)
        # The same features as inference: zipa.audio.features on the batch's audio.
        feats, lens = compute_fbank([cut.load_audio()[0] for cut in sup["cut"]])
        for i, cut in enumerate(sup["cut"]):
            raw = cut.supervisions[0].text
            assert sup["text"][i] == normalize_ipa(raw) == raw  # the test texts are in the inventory
            assert sup["token_ids"][i] == tok.encode(raw)
            assert sup["language"][i] == "aaa"
            assert int(sup["num_frames"][i]) == int(lens[i]) == num_feature_frames(cut.duration)
            torch.testing.assert_close(inputs[i, : lens[i]], feats[i, : lens[i]], rtol=1e-5, atol=1e-5)
        seen += ids(batch)
    assert sorted(seen) == [f"a{i:02d}" for i in range(16)]  # one epoch, each cut once


LOG_FLOOR = float(np.log(np.finfo(np.float32).eps))  # lhotse's fbank clamps energies here


def features_by_cut(dm: AsrDataModule) -> dict:
    """{cut id: (its padded input rows (T, 80), its number of valid frames)} over one epoch."""
    out = {}
    for batch in dm.train_dataloaders(dm.train_cuts()):
        for i, cut in enumerate(batch["supervisions"]["cut"]):
            out[cut.id] = (batch["inputs"][i], int(batch["supervisions"]["num_frames"][i]))
    return out


def test_dataloader_workers_apply_spec_augment_and_volume_perturbation(sets):
    """With 2 workers, each augmentation does what it says to the features of the same batches
    (compared with the unaugmented features of the same cuts): SpecAugment without time warp
    replaces whole frames and whole bins by one mask value and leaves the rest equal; volume
    perturbation by a factor in [0.125, 2] adds 2 ln(factor) to every log-mel value; both
    together (with time warp) change the batches."""
    data = ("--train-shar-dirs", str(sets["a"]), "--max-duration", "3", "--drop-last", "false")
    dm = module(*data, "--num-workers", "2", "--enable-spec-aug", "true", "--perturb-volume", "true")
    batches = list(dm.train_dataloaders(dm.train_cuts()))
    assert batches and all(b["inputs"].shape[2] == 80 for b in batches)
    assert all(torch.isfinite(b["inputs"]).all() for b in batches)

    plain = features_by_cut(module(*data))
    both = {cut_id: feats for b in batches for cut_id, feats in zip(ids(b), b["inputs"])}
    assert sorted(both) == sorted(plain) == [f"a{i:02d}" for i in range(16)]
    changed = [cut_id for cut_id in plain if not torch.equal(both[cut_id], plain[cut_id][0])]
    assert len(changed) >= 12, f"SpecAugment (p=0.9) and volume perturbation changed only {changed}"

    spec = features_by_cut(module(*data, "--num-workers", "2", "--enable-spec-aug", "true",
                                  "--spec-aug-time-warp-factor", "0"))
    masked_frames = masked_bins = masked_cuts = 0
    for cut_id, (expected, _) in plain.items():
        got = spec[cut_id][0]
        assert got.shape == expected.shape
        differ = got != expected
        if not differ.any():
            continue
        masked_cuts += 1
        (value,) = got[differ].unique().tolist()  # one mask value (the matrix mean) per cut
        frames, bins = (got == value).all(1), (got == value).all(0)
        assert (~differ | frames[:, None] | bins[None, :]).all(), f"{cut_id}: changed outside whole frames/bins"
        masked_frames += int(frames.sum())
        masked_bins += int(bins.sum())
    assert masked_cuts >= 12 and masked_frames > 0 and masked_bins > 0, (masked_cuts, masked_frames, masked_bins)

    volume = features_by_cut(module(*data, "--num-workers", "2", "--perturb-volume", "true"))
    shifts = []
    for cut_id, (expected, n) in plain.items():
        got = volume[cut_id][0]
        diff = got[:n] - expected[:n]
        shift = float(diff.median())
        unclamped = torch.minimum(expected[:n], expected[:n] + shift) > LOG_FLOOR + 0.5
        assert unclamped.float().mean() > 0.95
        torch.testing.assert_close(diff[unclamped], torch.full_like(diff[unclamped], shift), rtol=0, atol=2e-3)
        assert 2 * np.log(0.125) - 1e-3 <= shift <= 2 * np.log(2.0) + 1e-3
        shifts.append(shift)
    perturbed = sum(abs(x) > 0.01 for x in shifts)
    assert 4 <= perturbed <= 12, f"p=0.5 of 16 cuts should be perturbed: {shifts}"


def test_remove_diacritics_applies_to_labels(tmp_path):
    write_shar([ShardRecord("d", tone(8000, 1), "pʰaː tʲi", "x")], tmp_path / "d")
    dm = module("--train-shar-dirs", str(tmp_path / "d"), "--remove-diacritics", "true",
                "--drop-last", "false")
    (batch,) = list(dm.train_dataloaders(dm.train_cuts()))
    assert batch["supervisions"]["text"] == ["pa ti"]
    assert batch["supervisions"]["token_ids"] == [Tokenizer.default().encode("pa ti")]


def test_mixing_two_sources_yields_both(sets):
    dm = module("--train-shar-dirs", str(sets["a"]), str(sets["b"]), "--max-duration", "4",
                "--drop-last", "false")
    cut_ids = [c.id for c in dm.train_cuts()]
    assert sorted(cut_ids) == sorted([f"a{i:02d}" for i in range(16)] + [f"b{i:02d}" for i in range(8)])
    got = [i for b in dm.train_dataloaders(dm.train_cuts()) for i in ids(b)]
    assert {i[0] for i in got} == {"a", "b"} and len(got) == 24

    # Repeated (ZIPA's infinite iteration): weighted mixing keeps drawing from both.
    dm = module("--train-shar-dirs", str(sets["a"]), str(sets["b"]), "--train-repeat", "true",
                "--train-weights", "1", "3")
    first = [c.id for _, c in zip(range(60), dm.train_cuts())]
    assert len(first) == 60 and sum(i.startswith("b") for i in first) > 20  # b recycled
    unsup = module("--unsup-shar-dirs", str(sets["b"])).unsup_cuts()
    assert len([c for _, c in zip(range(20), unsup)]) == 20  # 8 cuts, repeated


def test_dev_and_test_sets_by_name(sets):
    dm = module("--dev-shar-dirs", f"dev_a={sets['a']}", "--test-shar-dirs", str(sets["b"]),
                "--max-duration", "5")
    devs, tests = dm.dev_cuts(), dm.test_cuts()
    assert list(devs) == ["dev_a"] and list(tests) == ["b"]
    got = [i for b in dm.valid_dataloaders(devs) for i in ids(b)]
    assert sorted(got) == [f"a{i:02d}" for i in range(16)]
    got = [i for b in dm.test_dataloaders(tests["b"]) for i in ids(b)]
    assert sorted(got) == [f"b{i:02d}" for i in range(8)]


@pytest.mark.parametrize("bucketing", ["true", "false"])
def test_sampler_state_restores_the_same_next_batches(sets, bucketing):
    data = ("--train-shar-dirs", str(sets["a"]), str(sets["b"]), "--max-duration", "2.5",
            "--bucketing-sampler", bucketing, "--num-buckets", "3",
            "--enable-spec-aug", "true", "--perturb-volume", "true")
    argv = data + ("--num-workers", "2")
    dm = module(*argv)
    dl = dm.train_dataloaders(dm.train_cuts())
    dl.sampler.set_epoch(1)  # a later epoch: shard order must follow the epoch, not the process
    it = iter(dl)
    for _ in range(3):
        next(it)  # the workers have prefetched further than this
    state = dl.sampler.state_dict()
    expected = [(ids(b), b["inputs"]) for b in it]
    assert len(expected) >= 2

    torch.manual_seed(1234)  # another process state: augmentation must not depend on it
    dm2 = module(*data, "--num-workers", "0")  # a fresh run, as after a restart
    dl2 = dm2.train_dataloaders(dm2.train_cuts(), sampler_state_dict=state)
    got = [(ids(b), b["inputs"]) for b in dl2]
    assert [g[0] for g in got] == [e[0] for e in expected]
    for (_, a), (_, b) in zip(got, expected):  # volume perturbation and SpecAugment included
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    # ... which really changed every one of these batches: equal augmented batches mean something.
    plain = features_by_cut(module("--train-shar-dirs", str(sets["a"]), str(sets["b"]), "--max-duration", "2.5",
                                   "--drop-last", "false"))
    for cut_ids, inputs in expected:
        same = [torch.equal(row[:plain[cut_id][1]], plain[cut_id][0][:plain[cut_id][1]])
                for cut_id, row in zip(cut_ids, inputs)]
        assert not all(same), f"batch {cut_ids} is its unaugmented features"

    # The next epoch after a restore also matches an uninterrupted run.
    dl.sampler.set_epoch(2)
    dl2.sampler.set_epoch(2)
    assert [ids(b) for b in dl2] == [ids(b) for b in dl]


def test_augmentation_leaves_the_callers_random_state_alone(sets):
    import random

    def state_after(augment: str):
        dm = module("--train-shar-dirs", str(sets["a"]), "--max-duration", "3", "--drop-last", "false",
                    "--enable-spec-aug", augment, "--perturb-volume", augment)
        torch.manual_seed(5), random.seed(5), np.random.seed(5)
        inputs = {}
        for batch in dm.train_dataloaders(dm.train_cuts()):
            inputs.update(zip(ids(batch), batch["inputs"]))
        return (torch.rand(1), random.random(), np.random.rand()), inputs

    augmented_state, augmented = state_after("true")
    plain_state, plain = state_after("false")
    assert augmented_state == plain_state
    # The augmentation did draw random numbers (it changed the features), just not the caller's.
    assert sorted(augmented) == sorted(plain)
    assert sum(not torch.equal(augmented[k], plain[k]) for k in plain) >= len(plain) // 2


def test_precomputed_features_from_shar(tmp_path, sets):
    from lhotse import CutSet
    from lhotse.features.io import NumpyFilesWriter

    from zipa.audio.features import get_fbank
    from zipa.data.shar import read_shar_dir

    cuts = list(read_shar_dir(sets["b"]))
    with NumpyFilesWriter(tmp_path / "store") as w:
        cuts = CutSet.from_cuts([c.compute_and_store_features(get_fbank(), w) for c in cuts])
    (tmp_path / "feats").mkdir()
    cuts.to_shar(tmp_path / "feats", fields={"recording": "flac", "features": "numpy"}, shard_size=3)
    dm = module("--train-shar-dirs", str(tmp_path / "feats"), "--on-the-fly-feats", "false",
                "--perturb-volume", "true", "--max-duration", "3", "--drop-last", "false")
    by_id = {c.id: c for c in cuts}
    got = []
    for batch in dm.train_dataloaders(dm.train_cuts()):
        for i, cut in enumerate(batch["supervisions"]["cut"]):
            n = int(batch["supervisions"]["num_frames"][i])
            expected = torch.from_numpy(by_id[cut.id].load_features())
            torch.testing.assert_close(batch["inputs"][i, :n], expected)
            got.append(cut.id)
    assert sorted(got) == sorted(by_id)


def _corrupt_member(tar_path: Path, member_name: str) -> None:
    data = bytearray(tar_path.read_bytes())
    with tarfile.open(tar_path) as tar:
        member = tar.getmember(member_name)
    start = member.offset_data
    data[start: start + 64] = b"\xde\xad\xbe\xef" * 16  # the flac header and stream info
    tar_path.write_bytes(bytes(data))


def test_corrupted_flac_in_a_shard_is_skipped_and_counted(tmp_path, caplog):
    out = make_set(tmp_path / "c", "c", 6, shard_size=3)
    _corrupt_member(out / "recording.000001.tar", "c04.flac")
    dm = module("--dev-shar-dirs", str(out), "--max-duration", "100")
    dl = dm.valid_dataloaders(dm.dev_cuts())
    with caplog.at_level(logging.WARNING):
        got = [i for b in dl for i in ids(b)]
    assert sorted(got) == ["c00", "c01", "c02", "c03", "c05"]
    assert dl.dataset.num_unreadable == 1
    assert "skipping cut c04" in caplog.text and "1 cut(s) skipped" in caplog.text


@pytest.mark.filterwarnings("ignore::RuntimeWarning", "ignore::UserWarning")  # lhotse, 2 cuts
def test_a_batch_whose_every_cut_fails_is_dropped(tmp_path):
    out = make_set(tmp_path / "c", "c", 2, shard_size=1)
    _corrupt_member(out / "recording.000000.tar", "c00.flac")
    dm = module("--test-shar-dirs", str(out), "--max-duration", "0.3")  # one cut per batch
    got = [ids(b) for b in dm.test_dataloaders(dm.test_cuts()["c"])]
    assert got == [["c01"]]


# -- the CTC-fit filter -----------------------------------------------------------------------


def fake_cut(cut_id: str, duration: float, text: str):
    from lhotse import Recording, SupervisionSegment
    from lhotse.audio import AudioSource
    from lhotse.cut import MonoCut

    n = int(round(duration * 16000))
    rec = Recording(cut_id, [AudioSource("file", [0], "/dev/null")], 16000, n, duration)
    sup = SupervisionSegment(cut_id, cut_id, 0.0, duration, channel=0, text=text)
    return MonoCut(cut_id, 0.0, duration, 0, recording=rec, supervisions=[sup])


def test_frame_arithmetic_matches_the_model():
    from zipa.model.subsampling import Conv2dSubsampling

    embed = Conv2dSubsampling(80, 16).eval()
    for frames in (9, 10, 25, 26, 101):
        _, lens = embed(torch.zeros(1, frames, 80), torch.tensor([frames]))
        assert encoder_output_frames(frames, 1) == int(lens[0]) == (frames - 7) // 2
    assert encoder_output_frames(25, 2) == 5  # ceil(9 / 2), as Zipformer2 rounds up
    assert encoder_output_frames(8, 1) == 0 and encoder_output_frames(3, 2) == 0
    assert num_feature_frames(0.25) == 25
    assert count_repeats([3, 4, 4, 5, 5, 5]) == 3
    assert min_output_frames([3, 4, 4], ctc=True) == 4 and min_output_frames([3, 4, 4], ctc=False) == 3


def test_ctc_fit_filter_drops_cuts_that_cannot_fit(caplog):
    tok = Tokenizer.default()
    # 0.25 s -> 25 fbank frames -> (25 - 7) // 2 = 9 encoder frames (CR-CTC, factor 1).
    assert len(tok.encode("abcdefgh")) == 9 and len(tok.encode("abcdefghi")) == 10
    fits = fake_cut("fits", 0.25, "abcdefgh")  # 9 tokens in 9 frames
    too_many = fake_cut("too_many", 0.25, "abcdefghi")  # 10 tokens
    repeat = fake_cut("repeat", 0.25, "aabcdefg")  # 9 tokens + 1 repeat needs 10
    empty = fake_cut("empty", 1.0, "ˈ.")  # nothing left after normalisation

    f = CutFilter(LabelEncoder(), output_downsampling_factor=1, ctc=True)
    with caplog.at_level(logging.WARNING):
        kept = [c.id for c in (fits, too_many, repeat, empty) if f(c)]
    assert kept == ["fits"]
    assert f.kept == 1 and sum(f.dropped.values()) == 3
    assert f.dropped["too many tokens for the CTC output length"] == 2
    assert f.dropped["empty label"] == 1
    assert caplog.text.count("dropped") == 1  # logged once (at the 1st drop), not per cut

    # Pruned RNN-T alone does not need blanks between repeats.
    assert CutFilter(LabelEncoder(), ctc=False)(repeat)
    # Transducer recipe (output downsampling 2): ceil(9 / 2) = 5 frames.
    f2 = CutFilter(LabelEncoder(), output_downsampling_factor=2)
    assert f2(fake_cut("five", 0.25, "abcd")) and not f2(fake_cut("six", 0.25, "abcde"))
    # Duration limits.
    f3 = CutFilter(LabelEncoder(), min_duration=0.5, max_duration=2.0)
    assert [f3(fake_cut(str(d), d, "a")) for d in (0.3, 1.0, 2.5)] == [False, True, False]
    # Decoding only needs one encoder frame.
    f4 = CutFilter(LabelEncoder(), check_labels=False)
    assert f4(too_many) and not f4(fake_cut("short", 0.08, "a"))


def test_train_loader_drops_unfit_cuts_with_one_warning(tmp_path, caplog):
    records = [ShardRecord(f"ok{i}", tone(8000, i), "pa", "x") for i in range(3)]
    records.append(ShardRecord("long_label", tone(4000, 9), "pataka" * 8, "x"))  # 49 tokens, 0.25 s
    write_shar(records, tmp_path / "s")
    dm = module("--train-shar-dirs", str(tmp_path / "s"), "--drop-last", "false", "--max-duration", "10")
    with caplog.at_level(logging.WARNING):
        got = [i for b in dm.train_dataloaders(dm.train_cuts()) for i in ids(b)]
    assert sorted(got) == ["ok0", "ok1", "ok2"]
    assert "too many tokens for the CTC output length" in caplog.text
