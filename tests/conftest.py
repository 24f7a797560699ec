"""Shared test helpers: where the reference data lives, and a skip marker for its absence; the
tiny CTC model (`ctc_model`, its .pth path) and a `transcriber` on it, for the modules that
decode files (a module's own fixture of the same name takes precedence)."""

import importlib.util
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
REFERENCE = REPO.parent / "shared" / "reference"
PARITY = REFERENCE / "parity"

needs_parity = pytest.mark.skipif(not PARITY.is_dir(), reason="../shared/reference/parity is absent")


@pytest.fixture(scope="module")
def ctc_model(tmp_path_factory):
    from tiny_models import tiny_model_path

    return tiny_model_path(tmp_path_factory, "ctc")


@pytest.fixture(scope="module")
def transcriber(ctc_model):
    from zipa.inference.transcriber import Transcriber

    return Transcriber.from_checkpoint(ctc_model, device="cpu")


def rel_l2(actual, expected) -> float:
    """Relative L2 distance ||actual - expected|| / ||expected||."""
    actual, expected = actual.double(), expected.double()
    return float((actual - expected).norm() / expected.norm())


def edit_distance(a, b) -> int:
    """Levenshtein distance of two sequences (unit costs), written independently of the
    project's scorer so that tests can check it."""
    row = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        diagonal, row[0] = row[0], i
        for j, y in enumerate(b, 1):
            diagonal, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, diagonal + (x != y))
    return row[-1]


def load_benchmark(name: str):
    """The module benchmarks/NAME.py (benchmarks are scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(f"_bench_{name}", REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def pytest_collection_modifyitems(config, items):
    """Tests marked `cuda` are skipped where no GPU is visible."""
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if item.get_closest_marker("cuda") is not None:
            item.add_marker(skip)
