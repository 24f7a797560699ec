"""The package's front door and layout: `zipa.load_model` / `zipa.available_models` (lazy),
the icefall-layout root files as re-exports of the package, the one atomic writer, and imports
that point down the layers only."""

import ast
import re
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import REPO
from test_pretrained import make_hub_cache
from tiny_models import speechlike

import zipa
from zipa.hub.pretrained import MODELS, find_model, format_table
from zipa.inference.zipa_api import ZipaModel, initialize_model
from zipa.model.config import ModelConfig
from zipa.utils import atomic
from zipa.utils.atomic import open_atomic, write_text_atomic

PACKAGE = REPO / "zipa"


@pytest.fixture(scope="module")
def clips():
    return [speechlike(2.0, seed) for seed in (11, 12, 13)]


# ----------------------------------------------------------------------------- zipa.load_model


def test_import_zipa_loads_neither_torch_nor_the_model_code():
    code = "import sys, zipa; zipa.available_models(); print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('zipa.')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO).stdout
    assert out.strip() == "['zipa.hub', 'zipa.hub.pretrained']"


def test_available_models_are_the_released_twelve():
    names = zipa.available_models()
    assert names == [m.name for m in MODELS] and len(set(names)) == 12
    assert all(find_model(name) is not None for name in names)


def test_load_model_from_a_checkpoint_equals_initialize_model(ctc_model, clips):
    model = zipa.load_model(ctc_model, device="cpu")
    reference = initialize_model(ctc_model, device="cpu")
    assert type(model) is type(reference) is ZipaModel
    hyps = model.transcribe(clips)
    assert any(hyps), "the tiny model should emit phones on speech-like audio"
    assert hyps == reference.transcribe(clips)
    assert model.inference(clips) == hyps  # the original API on the same object


def test_load_model_by_name_from_the_hub_cache(ctc_model, clips, tmp_path, monkeypatch):
    entry = find_model("zipa-cr-small-500k")
    make_hub_cache(tmp_path / "hub", entry.repo_id, {entry.filename: ctc_model})
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    by_name = zipa.load_model("zipa-cr-small-500k", device="cpu")
    assert by_name.transcribe(clips) == zipa.load_model(ctc_model, device="cpu").transcribe(clips)
    with pytest.raises(FileNotFoundError, match="anyspeech/zipa-large-crctc-500k: not in the Hugging Face cache"):
        zipa.load_model("zipa-cr-large-500k", device="cpu")  # not cached, offline


def test_load_model_overrides_reach_the_config(ctc_model):
    with pytest.raises(TypeError, match="no_such_setting"):
        zipa.load_model(ctc_model, device="cpu", no_such_setting=1)
    causal = zipa.load_model(ctc_model, device="cpu", chunk_size=(16,), left_context_frames=(64,))
    assert causal.model.encoder.chunk_size == (16,)
    assert zipa.load_model(ctc_model, device="cpu").model.encoder.chunk_size == ModelConfig().chunk_size


def test_missing_checkpoint_path_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.pth"):
        zipa.load_model(tmp_path / "nowhere.pth", device="cpu")


def test_python_dash_m_zipa_is_the_command():
    out = subprocess.run([sys.executable, "-m", "zipa", "--version"], capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0 and out.stdout.strip() == f"zipa {zipa.__version__}"


# ----------------------------------------------------------------------------- icefall layout


def test_root_data_module_is_the_package_data_module():
    import data_module

    from zipa.data import module

    assert data_module.AsrDataModule is module.AsrDataModule
    assert data_module.parse_named_dirs is module.parse_named_dirs


def test_root_inference_scripts_are_the_package_api():
    import zipa_ctc_inference
    import zipa_transducer_inference

    for script in (zipa_ctc_inference, zipa_transducer_inference):
        assert script.initialize_model is initialize_model


def test_package_top_holds_only_the_front_door():
    modules = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert modules == ["__init__.py", "__main__.py"]
    assert (PACKAGE / "cli" / "__init__.py").is_file()


# Layers of the design, bottom up; a module may import its own subpackage and those of lower
# layers (never one beside it), at the top of the file, inside a function (lazily) or for type
# checking alike.
LAYERS = {
    "utils": 0, "assets": 0, "hub": 0,         # foundations: no zipa import between them
    "audio": 1, "text": 1, "losses": 1,
    "model": 2,
    "decoding": 3,                             # searches and alignments over a model's outputs
    "data": 4, "onnx": 4,
    "evaluation": 5,
    "inference": 6,                            # the one audio -> phones path
    "plot": 7, "train": 7,
    "web": 8,
}


def _zipa_imports(path: Path):
    """(imported module, the names imported from it) for every zipa import of ``path``,
    wherever it stands in the file."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "zipa":
            if node.module == "zipa":
                yield from ((f"zipa.{alias.name}", []) for alias in node.names)
            else:
                yield node.module, [alias.name for alias in node.names]
        elif isinstance(node, ast.Import):
            yield from ((a.name, []) for a in node.names if a.name.split(".")[0] == "zipa")


def _package_modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        yield path, ".".join(("zipa",) + tuple(p for p in parts if p != "__init__"))


def test_imports_point_down_the_layers():
    subpackages = sorted(p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file())
    assert set(subpackages) <= set(LAYERS) | {"cli"}, f"new subpackage without a layer: {set(subpackages) - set(LAYERS)}"
    upward = []
    for path, module in _package_modules():
        own = module.split(".")[1] if module.count(".") else None
        if own not in LAYERS:
            continue  # the front door (zipa/__init__.py, __main__.py, zipa/cli/) may import anything
        for target, _ in _zipa_imports(path):
            target_package = target.split(".")[1] if "." in target else None
            if target_package not in LAYERS or LAYERS[target_package] > LAYERS[own] or (
                    LAYERS[target_package] == LAYERS[own] and target_package != own):
                upward.append(f"{module} imports {target}")
    assert upward == []


def test_no_module_imports_a_private_name_of_another_subpackage():
    private = []
    for path, module in _package_modules():
        own = module.split(".")[:2]
        for target, names in _zipa_imports(path):
            if target.split(".")[:2] != own:
                private += [f"{module} imports {target}.{name}" for name in names if name.startswith("_")]
    assert private == []


def test_modules_do_not_import_each_other_in_a_circle():
    modules = dict(_package_modules())
    known = set(modules.values())
    graph = {module: set() for module in known}
    for path, module in modules.items():
        for target, names in _zipa_imports(path):
            # ``from zipa.a import b`` imports module zipa.a.b when there is one
            found = [f"{target}.{name}" for name in names if f"{target}.{name}" in known] or [target]
            graph[module] |= {t for t in found if t in known and t != module and not module.startswith(t + ".")
                              and not t == "zipa"}
    state, cycles = {}, []

    def visit(node, stack):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                cycles.append(" -> ".join(stack[stack.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt, stack)
        stack.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [])
    assert cycles == []


# ----------------------------------------------------------------------------- the atomic writer


def test_atomic_write_replaces_whole_file_with_usual_permissions(tmp_path):
    path = tmp_path / "sub" / "out.txt"
    write_text_atomic(path, "first\n")
    assert path.read_text() == "first\n"
    mask = os.umask(0)
    os.umask(mask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~mask
    os.chmod(path, 0o600)
    write_text_atomic(path, "second\n")
    assert path.read_text() == "second\n" and path.stat().st_mode & 0o777 == 0o600
    assert os.listdir(path.parent) == ["out.txt"]


def test_failed_atomic_write_keeps_old_file_and_leaves_no_temp(tmp_path):
    path = tmp_path / "model.bin"
    with open_atomic(path, "wb") as f:
        f.write(b"old weights")
    with pytest.raises(RuntimeError, match="disk full"):
        with open_atomic(path, "wb") as f:
            f.write(b"half of the new")
            raise RuntimeError("disk full")
    assert path.read_bytes() == b"old weights"
    assert os.listdir(tmp_path) == ["model.bin"]
    with pytest.raises(KeyboardInterrupt):
        with open_atomic(tmp_path / "new.txt") as f:
            f.write("interrupted")
            raise KeyboardInterrupt
    assert os.listdir(tmp_path) == ["model.bin"]


def test_atomic_write_fsyncs_file_before_rename_and_folder_after(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(atomic.os, "fsync", lambda fd: (events.append(("fsync", os.path.isdir(f"/proc/self/fd/{fd}"))), real_fsync(fd)))
    monkeypatch.setattr(atomic.os, "replace", lambda a, b: (events.append(("replace", None)), real_replace(a, b)))
    write_text_atomic(tmp_path / "x.txt", "data")
    assert events == [("fsync", False), ("replace", None), ("fsync", True)]


def test_atomic_write_rejects_modes_it_cannot_make_atomic(tmp_path):
    with pytest.raises(ValueError, match="mode"):
        with open_atomic(tmp_path / "x.txt", "a"):
            pass
    assert os.listdir(tmp_path) == []


def test_every_writer_uses_the_one_atomic_helper():
    """No module writes a file some other way (checkpoints, shar side files, results, outputs)."""
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        for needle in (".write_text(", ".write_bytes(", "tempfile.mkstemp", 'open(path, "w', "open(path, 'w"):
            if needle in text and path != PACKAGE / "utils" / "atomic.py":
                offenders.append(f"{path.relative_to(REPO)}: {needle}")
    assert offenders == []


# ----------------------------------------------------------------------------- released models


def test_models_table_states_licence_and_size_of_each_model():
    table = format_table(cache_dir=REPO / "no-such-cache").splitlines()
    assert table[0].split()[:5] == ["name", "kind", "params", "size", "steps"] and "licence" in table[0]
    rows = {line.split()[0]: line for line in table[1:13]}
    assert set(rows) == set(zipa.available_models())
    for model in MODELS:
        expected = "CC BY-NC-SA 4.0" if "-ns-" in model.repo_id else "CC BY 4.0"
        assert model.licence == expected and f"  {expected}  " in rows[model.name]
    assert "≈256 MB" in rows["zipa-cr-small-500k"] and "≈1.2 GB" in rows["zipa-cr-large-500k"]


def test_readme_lists_every_released_model_with_its_licence():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    listed = dict(re.findall(r"^\| `([\w.-]+)` \|.*\| (CC [A-Z -]+4\.0) \|$", readme, flags=re.M))
    assert listed == {m.name: m.licence for m in MODELS}


# ----------------------------------------------------------------------------- audio at any rate


def test_arrays_at_another_rate_give_the_phones_of_the_file(ctc_model, clips, tmp_path):
    """An array at 44.1 kHz with `sampling_rate=` decodes like the same audio as a file; without
    the rate it would be read as 16 kHz (2.76x slower speech) and decode differently."""
    import soundfile as sf

    from zipa.audio.load import resample

    model = zipa.load_model(ctc_model, device="cpu")
    fast = [resample(clip, 16000, 44100) for clip in clips]
    paths = []
    for i, samples in enumerate(fast):
        paths.append(tmp_path / f"clip{i}.wav")
        sf.write(str(paths[-1]), samples, 44100, subtype="FLOAT")
    from_files = [model.transcribe([p])[0] for p in paths]
    assert any(from_files)
    assert [model.transcribe([a], sampling_rate=44100)[0] for a in fast] == from_files
    assert [model.inference([a], sampling_rate=44100)[0] for a in fast] == from_files
    assert [model.transcribe([a])[0] for a in fast] != from_files
    feats, lens = model.get_fbank(fast[:1], sampling_rate=44100)
    assert torch.equal(lens, model.get_fbank([paths[0]])[1])


def test_timestamps_from_python_match_the_transcript(ctc_model, clips):
    model = zipa.load_model(ctc_model, device="cpu")
    alignments = model.timestamps(clips)
    assert [a.text.split() for a in alignments] == model.transcribe(clips)
    for alignment, clip in zip(alignments, clips):
        assert alignment.phones, "the tiny model emits phones on these clips"
        starts = [p.start for p in alignment.phones]
        assert starts == sorted(starts) and 0 <= starts[0] and alignment.phones[-1].end <= len(clip) / 16000 + 0.04
        assert "".join(p.label for p in alignment.phones) == alignment.text.replace(" ", "")
        assert all(0 < p.confidence <= 1 for p in alignment.phones)
