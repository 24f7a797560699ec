"""Shared test helpers: where the reference data lives, and a skip marker for its absence."""

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
REFERENCE = REPO.parent / "shared" / "reference"
PARITY = REFERENCE / "parity"

needs_parity = pytest.mark.skipif(not PARITY.is_dir(), reason="../shared/reference/parity is absent")


def rel_l2(actual, expected) -> float:
    """Relative L2 distance ||actual - expected|| / ||expected||."""
    actual, expected = actual.double(), expected.double()
    return float((actual - expected).norm() / expected.norm())


def pytest_collection_modifyitems(config, items):
    """Tests marked `cuda` are skipped where no GPU is visible."""
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if item.get_closest_marker("cuda") is not None:
            item.add_marker(skip)
