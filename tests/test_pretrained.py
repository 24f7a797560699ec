"""Naming a model: local files and folders, the ZIPA table, and the Hugging Face cache used
offline (the cache is built here in huggingface_hub's layout: blobs, snapshots, refs/main)."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO
from tiny_models import speechlike, tiny_model_path, write_wav

from zipa.hub.pretrained import MODELS, ModelNotFoundError, find_model, format_table, is_cached, resolve_model

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def make_hub_cache(cache: Path, repo_id: str, files: dict, commit: str = COMMIT) -> Path:
    """A huggingface_hub cache entry: blobs/<hash>, snapshots/<commit>/<file> -> blob, refs/main."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True, exist_ok=True)
    for i, (name, source) in enumerate(files.items()):
        blob = repo / "blobs" / f"{i:040x}"
        shutil.copyfile(source, blob)
        link = snapshot / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    return snapshot


@pytest.fixture
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    return tiny_model_path(tmp_path_factory, "ctc")


def test_table_matches_the_zipa_readme():
    assert len(MODELS) == 12
    assert len({m.name for m in MODELS}) == len({m.repo_id for m in MODELS}) == 12
    for m in MODELS:
        assert re.fullmatch(r"anyspeech/zipa-(small|large)-(noncausal|crctc)(-ns)?(-no-diacritics)?-\d+k", m.repo_id)
        assert m.kind == ("transducer" if "noncausal" in m.repo_id else "ctc")
        assert m.size in m.repo_id and m.steps in m.repo_id
        assert m.diacritics == ("no-diacritics" not in m.repo_id)
        assert m.filename is None or (m.filename.endswith("_avg10.pth") and m.size in m.filename)
    assert find_model("zipa-cr-large-500k").filename == "zipa_large_crctc_500000_avg10.pth"
    assert find_model("anyspeech/zipa-small-crctc-500k") is find_model("zipa-small-crctc-500k")

    # README.md's "Released models" table lists exactly these models, in this order, as the table has them.
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme.split("\n## Released models\n", 1)[1].split("\n## ", 1)[0]
    rows = [[cell.strip() for cell in line.strip().strip("|").split("|")]
            for line in section.splitlines() if line.startswith("| `")]
    assert f"The {len(MODELS)} checkpoints" in section
    assert [row[0].strip("`") for row in rows] == [m.name for m in MODELS]
    for row, m in zip(rows, MODELS):
        kind = "transducer" if m.kind == "transducer" else "CR-CTC + NS" if m.pseudo_labels else "CR-CTC"
        assert row[1:] == [kind, m.params, f"≈{m.download_size}", m.steps, "yes" if m.diacritics else "removed",
                           m.licence], m.name
    # ... and every model name or Hub repo id the README mentions anywhere is one of them.
    names = set(re.findall(r"zipa-(?:t|cr)(?:-ns)?-(?:small|large)(?:-nodiacritics)?-\d+k", readme))
    assert names and names <= {m.name for m in MODELS}
    assert set(re.findall(r"anyspeech/zipa-[a-z0-9-]+", readme)) <= {m.repo_id for m in MODELS}


def test_local_file_and_folder(tmp_path, model_file):
    assert resolve_model(model_file) == model_file
    assert resolve_model(model_file.parent) == model_file  # the only .pth in its folder
    folder = tmp_path / "exp"
    folder.mkdir()
    for name in ("epoch-1.pth", "model_avg10.pth"):
        shutil.copyfile(model_file, folder / name)
    assert resolve_model(folder) == folder / "model_avg10.pth"
    shutil.copyfile(model_file, folder / "other_avg5.pth")
    with pytest.raises(ModelNotFoundError, match="several checkpoints"):
        resolve_model(folder)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelNotFoundError, match="no checkpoint"):
        resolve_model(empty)


def test_unknown_spec_points_to_zipa_models():
    with pytest.raises(ModelNotFoundError, match="zipa models"):
        resolve_model("no-such-model")
    with pytest.raises(ModelNotFoundError, match="zipa models"):
        resolve_model("./missing/model.pth")


def test_offline_finds_the_cached_checkpoint(tmp_path, offline, model_file):
    cache = tmp_path / "hub"
    snapshot = make_hub_cache(cache, "anyspeech/zipa-small-crctc-500k", {"zipa_small_crctc_500000_avg10.pth": model_file})
    expected = snapshot / "zipa_small_crctc_500000_avg10.pth"
    for spec in ("zipa-cr-small-500k", "anyspeech/zipa-small-crctc-500k", "zipa-small-crctc-500k",
                 "anyspeech/zipa-small-crctc-500k:zipa_small_crctc_500000_avg10.pth"):
        path = resolve_model(spec, cache_dir=cache)
        assert path == expected and path.read_bytes() == model_file.read_bytes()
    assert is_cached(find_model("zipa-cr-small-500k"), cache)
    assert not is_cached(find_model("zipa-cr-large-500k"), cache)
    assert re.search(r"zipa-cr-small-500k .* yes +anyspeech/zipa-small-crctc-500k", format_table(cache))


def test_offline_without_a_file_name_takes_the_averaged_checkpoint(tmp_path, offline, model_file):
    cache = tmp_path / "hub"
    repo = "anyspeech/zipa-small-crctc-ns-no-diacritics-700k"  # no file name in the table
    snapshot = make_hub_cache(cache, repo, {"README.md": model_file, "some_name_avg10.pth": model_file})
    assert resolve_model(repo, cache_dir=cache) == snapshot / "some_name_avg10.pth"
    # An unknown repo id works the same way.
    snapshot = make_hub_cache(cache, "someone/my-zipa", {"exp/model.pth": model_file})
    assert resolve_model("someone/my-zipa", cache_dir=cache) == snapshot / "exp" / "model.pth"


def test_offline_without_cache_says_what_to_download(tmp_path, offline):
    cache = tmp_path / "empty"
    with pytest.raises(ModelNotFoundError) as info:
        resolve_model("zipa-cr-ns-large-800k", cache_dir=cache)
    message = str(info.value)
    assert "HF_HUB_OFFLINE" in message
    assert "hf download anyspeech/zipa-large-crctc-ns-800k zipa_large_crctc_0.5_scale_800000_avg10.pth" in message
    assert str(cache / "models--anyspeech--zipa-large-crctc-ns-800k") in message
    assert "https://huggingface.co/anyspeech/zipa-large-crctc-ns-800k" in message


def test_cli_transcribes_with_a_hub_model_offline(tmp_path, model_file):
    """The real environment variables, read by huggingface_hub at import, in a fresh process."""
    cache = tmp_path / "hub"
    make_hub_cache(cache, "anyspeech/zipa-large-crctc-500k", {"zipa_large_crctc_500000_avg10.pth": model_file})
    audio = write_wav(tmp_path / "x.wav", speechlike(1.5, 3))
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(cache), HF_HOME=str(tmp_path / "home"))
    done = subprocess.run(
        [sys.executable, "-m", "zipa.cli", "transcribe", str(audio), "--model", "zipa-cr-large-500k", "-q"],
        capture_output=True, text=True, env=env, cwd=REPO, timeout=300,
    )
    assert done.returncode == 0, done.stderr
    local = subprocess.run(
        [sys.executable, "-m", "zipa.cli", "transcribe", str(audio), "--model", str(model_file), "-q"],
        capture_output=True, text=True, cwd=REPO, timeout=300,
    )
    assert done.stdout == local.stdout and done.stdout.strip()

    missing = subprocess.run(
        [sys.executable, "-m", "zipa.cli", "transcribe", str(audio), "--model", "zipa-t-small-300k"],
        capture_output=True, text=True, env=env, cwd=REPO, timeout=300,
    )
    assert missing.returncode == 2
    assert "anyspeech/zipa-small-noncausal-300k" in missing.stderr and "hf download" in missing.stderr
