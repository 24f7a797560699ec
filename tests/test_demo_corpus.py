"""The embedded demo corpus: a tiny version built in a few seconds, checked end to end."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from shar_checks import check_plain_lhotse_reads

pytest.importorskip("espeakng_loader")

from zipa.data.demo_corpus import (  # noqa: E402
    ADAPTATION_LANGUAGES,
    HELDOUT_LANGUAGES,
    TRAIN_LANGUAGES,
    DemoCorpusConfig,
    build_demo_corpus,
    plan_corpus,
    read_texts,
)
from zipa.data.shar import read_shar_dir  # noqa: E402
from zipa.text.ipa import normalize_ipa  # noqa: E402
from zipa.text.tokenizer import Tokenizer  # noqa: E402
from zipa.utils.tsv import InputError  # noqa: E402

REPO = Path(__file__).resolve().parents[1]

TEXTS = {
    "en": ["The dog is sleeping.", "We eat rice every day.", "Please open the door."],
    "sw": ["Mbwa analala.", "Tunakula wali kila siku.", "Tafadhali fungua mlango."],
    "id": ["Anjing itu tidur.", "Kami makan nasi."],
}


@pytest.fixture
def texts_dir(tmp_path):
    d = tmp_path / "texts"
    d.mkdir()
    for code, lines in TEXTS.items():
        (d / f"{code}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return d


def tiny_config(texts_dir, seed=7):
    return DemoCorpusConfig(
        seed=seed, texts_dir=str(texts_dir), languages=("en", "sw"), heldout=("id",),
        num_dev=1, num_test=1, train_renderings=2, shard_size=3,
    )


def load(split_dir):
    return {cut.id: cut for cut in read_shar_dir(split_dir)}


def test_plan(texts_dir):
    plan = plan_corpus(tiny_config(texts_dir))
    assert {s: len(u) for s, u in plan.items()} == {"train": 4, "dev": 2, "test": 2, "heldout": 2, "unlabeled": 0,
                                                    "test_festival": 0, "test_festival_heldout": 0}
    # The two renderings of a train sentence use different voice variants.
    by_sentence = {}
    for u in plan["train"]:
        by_sentence.setdefault((u.language, u.sentence), []).append(u.voice)
    assert all(len(set(v)) == 2 for v in by_sentence.values())
    for u in plan["train"]:
        assert 130 <= u.rate <= 190 and 30 <= u.pitch <= 70
    assert plan_corpus(tiny_config(texts_dir)) == plan  # a function of the config
    assert plan_corpus(tiny_config(texts_dir, seed=8)) != plan


def test_unlabeled_split_takes_train_sentences_and_leaves_the_default_plan_alone(texts_dir):
    base_cfg = tiny_config(texts_dir)
    base_cfg.num_dev = 0
    base = plan_corpus(base_cfg)
    cfg = tiny_config(texts_dir)
    cfg.num_dev, cfg.num_unlabeled = 0, 1
    plan = plan_corpus(cfg)
    sentences = {s: {(u.language, u.sentence) for u in plan[s]} for s in plan}
    # One of each language's three sentences moves from train to unlabeled, spoken as often.
    assert len(sentences["unlabeled"]) == 2 and len(plan["unlabeled"]) == 4
    assert not sentences["unlabeled"] & (sentences["train"] | sentences["dev"] | sentences["test"])
    assert sentences["unlabeled"] | sentences["train"] == {(u.language, u.sentence) for u in base["train"]}
    assert [u.id for u in plan["test"]] == [u.id for u in base["test"]]  # same test sentences
    # A corpus built before num_unlabeled existed has the same stored configuration.
    assert "num_unlabeled" not in tiny_config(texts_dir).to_json()
    assert cfg.to_json()["num_unlabeled"] == 1


def test_festival_renderings_replace_espeak_ones_and_keep_sentences_apart(texts_dir):
    base = plan_corpus(tiny_config(texts_dir))
    cfg = tiny_config(texts_dir)
    cfg.festival_renderings = 1
    plan = plan_corpus(cfg)
    # English (a Festival voice) has one of its two train renderings spoken by ked_diphone instead
    # of an espeak-ng variant; Swahili (none) and the total are unchanged.
    assert len(plan["train"]) == len(base["train"])
    spoken = {(u.language, u.festival) for u in plan["train"]}
    assert spoken == {("en", ""), ("en", "ked_diphone"), ("sw", "")}
    assert all(0.85 <= u.stretch <= 1.15 for u in plan["train"] if u.festival)
    # dev and test are spoken once, by espeak-ng, exactly as without Festival.
    for split in ("dev", "test"):
        assert not any(u.festival for u in plan[split]), split
        assert [u.voice for u in plan[split]] == [u.voice for u in base[split]]
    # The Festival test splits hold exactly the test sentences: the allowed voice, the held-out ones.
    test = {(u.language, u.sentence) for u in plan["test"] if u.language == "en"}
    assert {(u.language, u.sentence) for u in plan["test_festival"]} == test
    assert [u.festival for u in plan["test_festival"]] == ["ked_diphone"]
    assert sorted(u.festival for u in plan["test_festival_heldout"]) == ["cmu_us_slt_arctic_hts", "kal_diphone"]
    train = {(u.language, u.sentence) for u in plan["train"]}
    assert not train & test
    assert cfg.to_json()["festival_renderings"] == 1 and "festival_renderings" not in base and \
        "festival_renderings" not in tiny_config(texts_dir).to_json()


def test_tiny_corpus(tmp_path, texts_dir):
    out = tmp_path / "demo"
    summary = build_demo_corpus(out, tiny_config(texts_dir))
    assert not summary.already_complete
    splits = {s: load(out / s) for s in ("train", "dev", "test", "heldout")}
    assert {s: len(c) for s, c in splits.items()} == {"train": 4, "dev": 2, "test": 2, "heldout": 2}
    # Each split is plain lhotse shar; the README, config and shar side files lie in the root.
    for split, cuts in splits.items():
        check_plain_lhotse_reads(out / split, len(cuts))
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["README.txt", "demo_corpus.json", "train", "dev", "test", "heldout"]
        + [f".{s}.{n}" for s in splits for n in ("shar_index.json", "skipped.tsv")]
    )

    # No sentence in two splits; the held-out language is never in train/dev/test.
    keys = {
        s: {(c.supervisions[0].language, c.custom["sentence"]) for c in cuts.values()}
        for s, cuts in splits.items()
    }
    assert not keys["train"] & keys["dev"] and not keys["train"] & keys["test"]
    assert not keys["dev"] & keys["test"]
    assert {lang for lang, _ in keys["heldout"]} == {"id"}
    assert all(lang in ("en", "sw") for s in ("train", "dev", "test") for lang, _ in keys[s])
    # Every sentence of each training language is used.
    assert len(keys["train"] | keys["dev"] | keys["test"]) == 6

    tok = Tokenizer.default()
    for cuts in splits.values():
        for cut in cuts.values():
            text = cut.supervisions[0].text
            assert text and normalize_ipa(text) == text  # labels are normalised
            ids = tok.encode(text)
            assert tok.unk_id not in ids
            assert len(ids) <= 20.0 * cut.duration  # max_token_rate
            audio = cut.load_audio()
            assert cut.sampling_rate == 16000 and audio.shape[0] == 1
            assert abs(audio.shape[1] / 16000 - cut.duration) < 1e-3
            assert 0.5 < cut.duration < 6.0
            assert float(np.sqrt(np.mean(audio**2))) > 0.01  # speech, not silence

    # A known label, from espeak-ng's reading of the text (hand-checked).
    labels = {c.custom["sentence"]: c.supervisions[0].text for c in splits["heldout"].values()}
    assert labels[2] == "kami makan nasi"

    readme = (out / "README.txt").read_text(encoding="utf-8")
    assert "heldout" in readme and "Austronesian" in readme
    meta = json.loads((out / "demo_corpus.json").read_text(encoding="utf-8"))
    assert meta["complete"] and meta["splits"]["train"]["en"]["cuts"] == 2

    # Running again with the same configuration does nothing (but move the side files of an
    # older layout out of the split folders); another configuration is refused.
    for name in ("shar_index.json", "skipped.tsv"):
        (out / f".train.{name}").rename(out / "train" / name)
    again = build_demo_corpus(out, tiny_config(texts_dir))
    assert again.already_complete
    check_plain_lhotse_reads(out / "train", 4)
    with pytest.raises(FileExistsError):
        build_demo_corpus(out, tiny_config(texts_dir, seed=8))


def run_cli(out, texts_dir, seed):
    cmd = [
        sys.executable, str(REPO / "local" / "make_demo_corpus.py"), "--out-dir", str(out),
        "--texts-dir", str(texts_dir), "--languages", "en,sw", "--heldout", "id",
        "--num-dev", "1", "--num-test", "1", "--train-renderings", "2", "--seed", str(seed),
        "--festival-renderings", "0",
    ]
    res = subprocess.run(cmd, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    return res.stdout


def test_cli_without_festival_builds_espeak_only_and_says_so(tmp_path, texts_dir):
    cmd = [sys.executable, str(REPO / "local" / "make_demo_corpus.py"), "--out-dir", str(tmp_path / "c"),
           "--texts-dir", str(texts_dir), "--languages", "en,sw", "--heldout", "id", "--num-dev", "1",
           "--num-test", "1", "--train-renderings", "2"]
    res = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, PATH=str(tmp_path)))
    assert res.returncode == 0, res.stderr
    assert "Festival is not installed; the corpus is espeak-ng only (apt-get install festival" in res.stderr
    meta = json.loads((tmp_path / "c" / "demo_corpus.json").read_text(encoding="utf-8"))
    assert "festival_renderings" not in meta["config"] and set(meta["splits"]) == {"train", "dev", "test", "heldout"}
    voices = {cut.custom["voice"] for cut in load(tmp_path / "c" / "train").values()}
    assert not any(v.startswith("festival:") for v in voices)


def test_deterministic_across_runs(tmp_path, texts_dir):
    run_cli(tmp_path / "a", texts_dir, seed=3)
    # Some synthesis in this process first: the corpus must not depend on it.
    from zipa.text import espeak

    espeak.synthesize("something else first", "en-us+f2")
    build_demo_corpus(tmp_path / "b", DemoCorpusConfig(
        seed=3, texts_dir=str(texts_dir), languages=("en", "sw"), heldout=("id",),
        num_dev=1, num_test=1, train_renderings=2,
    ))
    for split in ("train", "dev", "test", "heldout"):
        a, b = load(tmp_path / "a" / split), load(tmp_path / "b" / split)
        assert a.keys() == b.keys()
        for cut_id in a:
            assert a[cut_id].supervisions[0].text == b[cut_id].supervisions[0].text
            assert a[cut_id].custom["voice"] == b[cut_id].custom["voice"]
            assert np.array_equal(a[cut_id].load_audio(), b[cut_id].load_audio()), cut_id


def test_duplicate_sentence_is_an_error(tmp_path):
    path = tmp_path / "xx.txt"
    path.write_text("One.\nTwo.\nOne.\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"xx.txt:3: duplicate of line 1"):
        read_texts(path)


def test_repository_texts():
    # The fixed text lists: 60-120 distinct sentences for each default language.
    for lang in TRAIN_LANGUAGES + HELDOUT_LANGUAGES:
        sentences = read_texts(REPO / "zipa" / "assets" / "demo_texts" / f"{lang.code}.txt")
        assert 60 <= len(sentences) <= 120, lang.code
    # The fine-tuning language: enough sentences for train, dev, test and unlabeled splits.
    for lang in ADAPTATION_LANGUAGES:
        assert lang.code not in {x.code for x in TRAIN_LANGUAGES + HELDOUT_LANGUAGES}
        assert len(read_texts(REPO / "zipa" / "assets" / "demo_texts" / f"{lang.code}.txt")) >= 120
    assert len(TRAIN_LANGUAGES) >= 8
    assert len({lang.family for lang in TRAIN_LANGUAGES}) == len(TRAIN_LANGUAGES)


def run_prepare(*args):
    return subprocess.run([str(REPO / "prepare.sh"), *args], capture_output=True, text=True)


def test_prepare_sh_options():
    res = run_prepare("--help")
    assert res.returncode == 0
    assert "stage 0" in res.stdout and "--stop-stage 100" in res.stdout
    res = run_prepare("--no-such-option", "1")
    assert res.returncode != 0 and "unknown option --no-such-option" in res.stderr
    res = run_prepare("--stage")
    assert res.returncode != 0 and "needs a value" in res.stderr


@pytest.mark.slow
def test_prepare_sh_builds_documented_corpus(tmp_path):
    # The default corpus (documented in zipa/data/demo_corpus.py): about a minute on 2 cores.
    out = tmp_path / "demo"
    res = run_prepare("--demo-dir", str(out), "--stop-stage", "1")
    assert res.returncode == 0, res.stderr[-2000:]
    meta = json.loads((out / "demo_corpus.json").read_text(encoding="utf-8"))
    cuts = {s: sum(v["cuts"] for v in per.values()) for s, per in meta["splits"].items()}
    expected = {"train": 1920, "dev": 80, "test": 80, "heldout": 80}
    if meta["config"].get("festival_renderings"):  # Festival installed: its test sentences too
        expected.update(test_festival=40, test_festival_heldout=30)
    assert cuts == expected
    hours = sum(v["seconds"] for v in meta["splits"]["train"].values()) / 3600
    assert 1.2 < hours < 1.4
    assert set(meta["splits"]["train"]) == {lang.code for lang in TRAIN_LANGUAGES}
    assert set(meta["splits"]["heldout"]) == {"id"}
    stats = json.loads((out / "text_stats.json").read_text(encoding="utf-8"))
    assert all(not v["dropped_symbols"] for v in stats["languages"].values())
    # Re-running is a no-op.
    res = run_prepare("--demo-dir", str(out), "--stop-stage", "1")
    assert res.returncode == 0 and "nothing to do" in res.stdout


def test_no_timing_benchmark_sentence_is_in_a_demo_text_file():
    """benchmarks/timestamps.py scores models trained on the demo texts (the demo corpus, the
    adaptation corpora): none of its sentences may be one they trained on."""
    from conftest import load_benchmark

    timestamps = load_benchmark("timestamps")
    benchmark = {" ".join(text.split()) for _, text in timestamps.SENTENCES + timestamps.FESTIVAL_SENTENCES}
    for path in sorted((REPO / "zipa" / "assets" / "demo_texts").glob("*.txt")):
        shared = benchmark & {text for _, text in read_texts(path)}
        assert not shared, f"{path.name}: {sorted(shared)}"
