"""The package as users get it: the wheel is built from a copy of the source tree, installed
(alone, --no-deps) into a fresh virtual environment that borrows this environment's torch,
lhotse, ... through a .pth file, and used from a folder outside the checkout: the `zipa`
command, the README's Python example, and the files the wheel must (and must not) carry."""

import json
import os
import shutil
import site
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
from conftest import REPO
from tiny_models import speechlike, tiny_model_path, write_wav

import zipa
from zipa.hub.pretrained import MODELS

pytestmark = pytest.mark.slow
# The wheel is built offline (--no-build-isolation) with this environment's setuptools; the
# [dev] extra installs one recent enough for pyproject.toml's SPDX licence field.
pytest.importorskip("setuptools", minversion="77", reason="building the wheel needs setuptools>=77 here")

DIST = "zipa-phones"
TOP_LEVEL = {"zipa", "zipa_ctc_inference.py", "zipa_transducer_inference.py"}
ASSETS = ["ipa_simplified/unigram_127.model", "ipa_simplified/tokens.txt", "inventories/phoible.tsv",
          "inventories/LICENSE-phoible.txt"] + [
    f"demo_texts/{p.name}" for p in sorted((REPO / "zipa" / "assets" / "demo_texts").glob("*.txt"))
]

# Not part of a build: caches, environments, build outputs, run outputs (see .gitignore).
_SKIP_ANYWHERE = {".git", "__pycache__", ".pytest_cache"}
_SKIP_AT_TOP = {".venv", "venv", "build", "dist", "exp", "data", "download"}


def _ignore(folder, names):
    top = Path(folder) == REPO
    return {
        n for n in names
        if n in _SKIP_ANYWHERE or n.endswith(".egg-info") or (top and n in _SKIP_AT_TOP)
        or (Path(folder, n) / "pyvenv.cfg").exists()
    }


def _run(argv, **kwargs):
    argv = [str(a) for a in argv]
    done = subprocess.run(argv, capture_output=True, text=True, **kwargs)
    if done.returncode != 0:
        shown = " ".join(a if len(a) < 80 else a[:60] + "..." for a in argv)
        pytest.fail(f"{shown}\nexited {done.returncode}:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}", pytrace=False)
    return done.stdout


class Installed:
    """A wheel installed into its own virtual environment, with a work folder outside REPO."""

    def __init__(self, root: Path):
        self.wheel_dir, self.venv, self.work = root / "wheel", root / "venv", root / "work"
        pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input"]
        source = root / "src"  # a copy: the build writes build/ and *.egg-info beside the sources
        shutil.copytree(REPO, source, ignore=_ignore)
        _run(pip + ["wheel", "-q", "--no-deps", "--no-build-isolation", "--no-index", "-w", self.wheel_dir, source])
        (self.wheel,) = self.wheel_dir.glob("*.whl")

        _run([sys.executable, "-m", "venv", "--without-pip", self.venv])
        self.bin = self.venv / ("Scripts" if os.name == "nt" else "bin")
        self.python = self.bin / ("python.exe" if os.name == "nt" else "python")
        # pip runs in the new environment, which still sees nothing but itself.
        _run(pip + ["--python", self.python, "install", "-q", "--no-deps", "--no-index", self.wheel])
        self.site = Path(_run([self.python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"]).strip())
        self.installed = sorted(p.name for p in self.site.iterdir())
        # Then the dependencies: this environment's site-packages, appended to sys.path (plain
        # path lines: .pth files there, e.g. an editable install of the checkout, are not run).
        borrowed = site.getsitepackages() + [sysconfig.get_path("purelib")]
        (self.site / "_zipa_test_dependencies.pth").write_text("\n".join(dict.fromkeys(borrowed)) + "\n")

        self.work.mkdir()
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
        self.env.update(
            PATH=os.pathsep.join([str(self.bin), self.env.get("PATH", "")]),
            VIRTUAL_ENV=str(self.venv), HF_HUB_OFFLINE="1", HF_HOME=str(root / "hf"), OMP_NUM_THREADS="1",
        )

    def zipa(self, *args) -> str:
        return _run([self.bin / "zipa", *args], cwd=self.work, env=self.env)

    def python_json(self, code: str, *args):
        return json.loads(_run([self.python, "-c", code, *args], cwd=self.work, env=self.env).splitlines()[-1])


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    root = tmp_path_factory.mktemp("wheel_install")
    assert REPO not in root.parents, "the install must be tested outside the checkout"
    return Installed(root)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return tiny_model_path(tmp_path_factory, "ctc")


@pytest.fixture(scope="module")
def wav(installed):
    return write_wav(installed.work / "speech.wav", speechlike(2.0, 21))


def test_the_wheel_is_zipa_phones_and_carries_only_the_package(installed):
    assert installed.wheel.name.startswith(f"zipa_phones-{zipa.__version__}-")
    with zipfile.ZipFile(installed.wheel) as wheel:
        names = wheel.namelist()
        dist_info = f"zipa_phones-{zipa.__version__}.dist-info"
        metadata = wheel.read(f"{dist_info}/METADATA").decode()
        entry_points = wheel.read(f"{dist_info}/entry_points.txt").decode()
    assert f"Name: {DIST}\n" in metadata and f"Version: {zipa.__version__}\n" in metadata
    assert "zipa = zipa.cli:main" in entry_points
    assert {n.split("/")[0] for n in names} == TOP_LEVEL | {dist_info}  # no data_module, tests, recipes
    for asset in ASSETS:
        assert f"zipa/assets/{asset}" in names


def test_only_the_package_is_installed(installed):
    assert set(installed.installed) - {"__pycache__"} == TOP_LEVEL | {f"zipa_phones-{zipa.__version__}.dist-info"}


@pytest.fixture(scope="module")
def from_wheel(installed, model, wav):
    """The README's Python example, offline, run in the new environment, and what it imported."""
    code = """
import importlib.metadata, importlib.util, json, os, sys
import zipa
names = zipa.available_models()
m = zipa.load_model(sys.argv[1], device="cpu")
hyps = m.transcribe([sys.argv[2]])
assets = os.path.join(os.path.dirname(zipa.__file__), "assets")
print(json.dumps(dict(
    file=zipa.__file__, version=zipa.__version__, dist_version=importlib.metadata.version("zipa-phones"),
    names=names, hyps=hyps, model_module=sys.modules[type(m).__module__].__file__,
    data_module=importlib.util.find_spec("data_module") is not None,
    assets={a: os.path.isfile(os.path.join(assets, a)) for a in sys.argv[3:]},
)))
"""
    return installed.python_json(code, model, wav, *ASSETS)


def test_python_api_from_the_installed_wheel(installed, from_wheel, model, wav):
    got = from_wheel
    assert Path(got["file"]).is_relative_to(installed.site), f"zipa imported from {got['file']}, not the wheel"
    assert Path(got["model_module"]).is_relative_to(installed.site)
    assert got["version"] == got["dist_version"] == zipa.__version__
    assert got["names"] == [m.name for m in MODELS] and len(got["names"]) == 12
    assert got["assets"] == {a: True for a in ASSETS}
    assert not got["data_module"]
    assert any(got["hyps"][0]), "the tiny model should emit phones on speech-like audio"
    assert got["hyps"] == zipa.load_model(model, device="cpu").transcribe([wav])


def test_the_zipa_command(installed, from_wheel, model, wav):
    assert installed.zipa("--version").strip() == f"zipa {zipa.__version__}"
    table = installed.zipa("models")
    assert all(m.name in table and m.repo_id in table for m in MODELS) and len(MODELS) == 12
    out = installed.zipa("transcribe", wav, "--model", model, "-q")
    path, phones = out.rstrip("\n").split("\t")
    assert Path(path) == wav
    assert phones == " ".join(from_wheel["hyps"][0])  # the command and the API agree
