"""Shared fixtures: a small synthetic dataset made by the project itself (no real data)."""

from __future__ import annotations

from pathlib import Path

import pytest

from unet_scratch.synthetic import write_dataset

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "cvc-clinicdb-dev"


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Frames 1-12 of the synthetic set, zlib TIFFs in the CVC-ClinicDB layout."""
    return write_dataset(tmp_path_factory.mktemp("synthetic"), range(1, 13), seed=0)
