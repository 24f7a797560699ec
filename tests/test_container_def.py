"""icefall_container.def: its sections, its install line, and the scripts in it run here.

Apptainer is not installed on the test machines, so the image is never built here: the file is
parsed as apptainer parses it (a line whose first word starts with % opens a section), the shell
sections are syntax-checked with `sh -n`, and the %runscript, %environment and the %test smoke
test are run against this checkout with the project's Python.
"""

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

REPO = Path(__file__).resolve().parents[1]
DEF_FILE = REPO / "icefall_container.def"
PYPROJECT = REPO / "pyproject.toml"  # the file the test suite's install of zipa comes from
PROJECT_DIR = "/opt/zipa"
REQUIRED_SECTIONS = ["labels", "help", "files", "post", "environment", "runscript", "test"]


def parse_def(text: str):
    """(header lines, {section name: body}) as apptainer splits a definition file."""
    header, sections, current = [], {}, None
    for line in text.splitlines():
        words = line.split()
        if words and words[0].startswith("%"):
            current = words[0][1:].lower()
            sections.setdefault(current, "")
        elif current is None:
            header.append(line)
        else:
            sections[current] += line + "\n"
    return header, sections


@pytest.fixture(scope="module")
def definition():
    return parse_def(DEF_FILE.read_text())


@pytest.fixture(scope="module")
def sections(definition):
    return definition[1]


def _files(sections) -> dict:
    """%files as {source: destination}, comment lines skipped (as apptainer does)."""
    pairs = {}
    for line in sections["files"].splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            src, dst = line.split()
            pairs[src] = dst
    return pairs


def _venv_env(**extra) -> dict:
    """An environment whose `python` is the interpreter running the tests and which imports
    this checkout."""
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra)
    return env


def test_header_bootstraps_from_a_cuda_pytorch_image(definition):
    header = {}
    for line in definition[0]:
        if line.strip() and not line.strip().startswith("#"):
            key, _, value = line.partition(":")
            header[key.strip().lower()] = value.strip()
    assert header["bootstrap"] == "docker"
    assert re.fullmatch(r"pytorch/pytorch:2\.\d+\.\d+-cuda\d+\.\d+-cudnn\d+-(runtime|devel)", header["from"])


def test_every_section_is_present_and_not_empty(sections):
    for name in REQUIRED_SECTIONS:
        assert sections.get(name, "").strip(), f"%{name} is missing or empty"
    assert "{{" not in DEF_FILE.read_text(), "apptainer >= 1.2 reads {{ NAME }} as a build argument"


def test_files_copy_the_project_that_the_tests_install(sections):
    files = _files(sections)
    assert files.get("pyproject.toml") == f"{PROJECT_DIR}/pyproject.toml"
    assert (REPO / "pyproject.toml").samefile(PYPROJECT)
    for src, dst in files.items():
        assert (REPO / src).exists(), f"%files copies {src}, which is not in the repository"
        assert dst == f"{PROJECT_DIR}/{src}", f"{src} should land at {PROJECT_DIR}/{src}, not {dst}"
    # Everything pyproject.toml builds from must be in the image.
    project = tomllib.loads(PYPROJECT.read_text())
    setuptools = project["tool"]["setuptools"]
    needed = set(project["project"].get("license-files", []))
    needed |= {f"{m}.py" for m in setuptools.get("py-modules", [])}
    needed |= {p.split(".")[0] for p in setuptools["packages"]["find"]["include"]}
    needed |= {src for sources in setuptools.get("data-files", {}).values() for src in sources}
    copied = set(files)
    for path in needed:
        assert any(path == c or path.startswith(c + "/") for c in copied), f"{path} is not copied into the image"
    # The recipes and their helpers travel too.
    for path in ["zipformer_crctc", "zipformer_transducer", "local", "data_module.py"]:
        assert path in copied


def test_post_installs_the_copied_project_and_k2_only_on_request(sections):
    post = sections["post"]
    installs = [line.strip() for line in post.splitlines() if re.search(r"\bpip install\b", line)]
    project_installs = [line for line in installs
                        if re.search(rf"""(^|\s)(-e\s+)?(["']?){PROJECT_DIR}/?(\[[\w,]+\])?\3$""", line)]
    assert len(project_installs) == 1, installs
    # k2 is an opt-in extra: off by default and only inside its guarded block.
    assert re.search(r"^\s*ZIPA_INSTALL_K2=0\s*$", post, re.M)
    guard = post.index('if [ "$ZIPA_INSTALL_K2" = 1 ]')
    for match in re.finditer(r"k2==", post):
        assert match.start() > guard and match.start() < post.index("\n    fi\n", guard)
    # With the default, running the k2 block installs nothing (it never reaches pip).
    block = post[post.index("ZIPA_INSTALL_K2=0"): post.index("\n    fi\n", guard) + 8]
    sh = shutil.which("sh")
    result = subprocess.run([sh, "-euc", block], capture_output=True, text=True,
                            env={"PATH": "/nonexistent"})  # no pip, no python: must not be needed
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("name", ["post", "environment", "runscript", "test"])
def test_shell_sections_parse(sections, name):
    result = subprocess.run(["sh", "-n"], input=sections[name], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_environment_defaults(sections, tmp_path):
    script = tmp_path / "environment.sh"
    script.write_text(sections["environment"])
    show = f'. {shlex.quote(str(script))}; echo "$OMP_NUM_THREADS $PYTHONUNBUFFERED"'
    env = {"PATH": os.environ["PATH"]}
    assert subprocess.run(["sh", "-c", show], env=env, capture_output=True, text=True).stdout.split() == ["1", "1"]
    env["OMP_NUM_THREADS"] = "8"  # a caller's choice wins
    assert subprocess.run(["sh", "-c", show], env=env, capture_output=True, text=True).stdout.split() == ["8", "1"]


def test_runscript_forwards_to_the_zipa_command_or_a_recipe(sections, tmp_path):
    runscript = tmp_path / "runscript.sh"
    runscript.write_text(sections["runscript"])

    def run(*args):
        return subprocess.run(["sh", str(runscript), *args], cwd=REPO, env=_venv_env(),
                              capture_output=True, text=True, timeout=120)

    cli = run("--help")
    assert cli.returncode == 0, cli.stderr
    assert "transcribe" in cli.stdout
    recipe = run("zipformer_crctc/train.py", "--help")
    assert recipe.returncode == 0, recipe.stderr
    assert "--start-batch" in recipe.stdout


def _smoke_test_python(sections) -> str:
    match = re.search(r"python - <<'EOF'\n(.*?)\nEOF\n", sections["test"], re.S)
    assert match, "%test should run a python heredoc: python - <<'EOF' ... EOF"
    return match.group(1)


def test_smoke_test_runs_here(sections, tmp_path):
    code = _smoke_test_python(sections)
    compile(code, "%test", "exec")
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=_venv_env(),
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ZIPA smoke test passed on" in result.stdout
