"""local/lint.sh, the check CI runs before the tests (.ci/run): ruff (lint and format) and mypy
with the settings in pyproject.toml. It passes on the project, and it fails, naming the file and
the rule, when a module gets an unused import (ruff check), code not in ruff's format (ruff
format --check) or a type error (mypy), each tool on its own."""

import os
import shutil
import subprocess
import sys

import pytest
from conftest import REPO

MODULE = "zipa/utils/atomic.py"  # the module the violations are planted in (it imports no zipa)
UNUSED_IMPORT = ("import contextlib\n", "import contextlib\nimport json\n")
TYPE_ERROR = '\n\ndef planted_type_error() -> int:\n    return "not an int"\n'
UNFORMATTED = "\n\nPLANTED = [1,2]\n"  # legal, but not as ruff format writes it


def lint(root, *paths):
    """(exit status, output) of ``root/local/lint.sh paths`` run with this interpreter."""
    proc = subprocess.run(
        ["bash", str(root / "local" / "lint.sh"), *paths],
        capture_output=True, text=True, env=dict(os.environ, PY=sys.executable), timeout=600,
    )
    return proc.returncode, proc.stdout + proc.stderr


def planted(tmp_path, unused_import=False, type_error=False, unformatted=False):
    """A copy of lint.sh, pyproject.toml and MODULE in ``tmp_path``, with the violations asked for."""
    for name in ("local/lint.sh", "pyproject.toml", MODULE):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / name, tmp_path / name)
    module = tmp_path / MODULE
    text = module.read_text(encoding="utf-8")
    if unused_import:
        assert UNUSED_IMPORT[0] in text
        text = text.replace(*UNUSED_IMPORT, 1)
    if type_error:
        text += TYPE_ERROR
    if unformatted:
        text += UNFORMATTED
    module.write_text(text, encoding="utf-8")
    return tmp_path


def test_the_clean_copy_passes(tmp_path):
    status, output = lint(planted(tmp_path), MODULE)
    assert status == 0, output


def test_ruff_fails_on_an_unused_import(tmp_path):
    status, output = lint(planted(tmp_path, unused_import=True), MODULE)
    assert status != 0
    assert "F401" in output and "`json` imported but unused" in output and MODULE in output, output
    assert "Success: no issues found" in output  # mypy ran too, and found nothing


def test_mypy_fails_on_a_type_error(tmp_path):
    status, output = lint(planted(tmp_path, type_error=True), MODULE)
    assert status != 0
    assert f"{MODULE}:" in output and "[return-value]" in output, output
    assert "All checks passed!" in output  # ruff ran too, and found nothing


def test_the_format_check_fails_on_unformatted_code(tmp_path):
    status, output = lint(planted(tmp_path, unformatted=True), MODULE)
    assert status != 0
    assert "would be reformatted" in output and MODULE in output and "PLANTED = [1, 2]" in output, output
    assert "All checks passed!" in output and "Success: no issues found" in output  # lint and types are fine


def test_ci_lints_before_the_tests():
    lines = [line.strip() for line in (REPO / ".ci" / "run").read_text(encoding="utf-8").splitlines()]
    assert "set -euo pipefail" in lines
    assert lines.index("local/lint.sh") < lines.index("exec ./test.sh -q")


@pytest.mark.slow
def test_the_project_passes():
    status, output = lint(REPO)
    assert status == 0, output
