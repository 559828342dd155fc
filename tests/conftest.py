"""Shared fixtures: the real reference data in ../shared/reference (skipped when absent)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
REFERENCE_DIR = Path(os.environ.get("SAWA_REFERENCE_DIR", REPO.parent / "shared" / "reference"))

L1B_NAME = "gedi/GEDI01_B_2019108080338_O01964_T05337_02_003_01_sub.h5"
L2A_NAME = "gedi/GEDI02_A_2019108080338_O01964_T05337_02_001_01_sub.h5"
L2B_NAME = "gedi/GEDI02_B_2019108080338_O01964_T05337_02_001_01_sub.h5"
L4A_NAME = "gedi/GEDI04_A_2020036151358_O06515_02_T00198_02_002_01_V002.h5"


def _ref(name: str) -> Path:
    path = REFERENCE_DIR / name
    if not path.exists():
        pytest.skip(f"reference file {path} is absent (../shared/reference not beside the checkout)")
    return path


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    if not REFERENCE_DIR.is_dir():
        pytest.skip(f"reference folder {REFERENCE_DIR} is absent")
    return REFERENCE_DIR


@pytest.fixture(scope="session")
def l1b_path() -> Path:
    return _ref(L1B_NAME)


@pytest.fixture(scope="session")
def l2a_path() -> Path:
    return _ref(L2A_NAME)


@pytest.fixture(scope="session")
def l2b_path() -> Path:
    return _ref(L2B_NAME)


@pytest.fixture(scope="session")
def l4a_path() -> Path:
    return _ref(L4A_NAME)


@pytest.fixture(scope="session")
def srtm_path() -> Path:
    return _ref("dem/srtm_ref.tif")


@pytest.fixture(scope="session")
def copernicus_path() -> Path:
    return _ref("dem/Copernicus_DSM_10_N45_00_E005_00_DEM.tif")


@pytest.fixture(scope="session")
def fao_csv_path() -> Path:
    return _ref("fao/FRACarbonStock.csv")


@pytest.fixture(scope="session")
def countries_path() -> Path:
    return _ref("countries/ne_110m_admin_0_countries.gpkg")
