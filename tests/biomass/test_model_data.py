"""NASA's L4A model table: read from the real granule, packaged JSON copy, stratum look-up, tampering."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

from biomass.model_data import (
    PACKAGED_TABLE_PATH,
    load_packaged_model_table,
    read_model_table,
    read_model_table_json,
    write_model_table_json,
)
from waveform.errors import ModelFileError, SawaFileError, WrongProductError
from waveform.outputs import sha256_file


@pytest.fixture(scope="session")
def granule_table(l4a_path):
    return read_model_table(l4a_path)


def test_granule_table_contents(granule_table):
    t = granule_table
    assert len(t) == 35
    assert t.pft_lut == {1: "ENT", 2: "EBT", 3: "DNT", 4: "DBT", 5: "GSW", 6: "GSW", 11: "GSW"}
    assert t.region_lut == {1: "Eu", 2: "NAs", 3: "Au", 4: "Af", 5: "SAs", 6: "SA", 7: "NAm"}
    assert (t.predictor_offset_m, t.response_offset, t.alpha) == (100.0, 0.0, 0.1)
    gsw = t.strata["GSW_NAs"]
    # values printed from ANCILLARY/model_data of the granule (float32 storage)
    assert gsw.rh_index == (98,)
    np.testing.assert_allclose(gsw.par, [-124.832283, 12.42631], rtol=1e-7)
    assert gsw.rse == pytest.approx(1.6262748, rel=1e-7)
    assert gsw.dof == 87
    assert gsw.bias_correction_value == pytest.approx(1.1181948, rel=1e-7)
    assert (gsw.x_transform, gsw.y_transform, gsw.bias_correction_name) == ("sqrt", "sqrt", "Snowdon")
    assert gsw.model_name == "GSW_coarse" and gsw.fit_stratum == "GSW"
    au = t.strata["GSW_Au"]
    assert au.rh_index == (50, 80, 98) and au.npar == 4 and au.vcov.shape == (4, 4)
    assert t.strata["EBT_SAs"].rh_index == (50, 98)
    assert t.provenance["PGEVersion"] == "002" and t.provenance["VersionID"] == "02"


def test_packaged_json_equals_granule_table(granule_table, l4a_path):
    packaged = load_packaged_model_table()
    assert packaged.provenance["granule_sha256"] == sha256_file(l4a_path)
    assert packaged.provenance["fileName"] == l4a_path.name
    assert sorted(packaged.strata) == sorted(granule_table.strata)
    for name, a in granule_table.strata.items():
        b = packaged.strata[name]
        assert a.to_dict() == b.to_dict(), name
    assert packaged.pft_lut == granule_table.pft_lut and packaged.region_lut == granule_table.region_lut


def test_strata_from_pft_region_codes_match_granule(granule_table, l4a_path):
    with h5py.File(l4a_path, "r") as f:
        for beam in [k for k in f if k.startswith("BEAM")]:
            g = f[beam]
            expected = [s.decode() if isinstance(s, bytes) else str(s) for s in g["predict_stratum"][:]]
            got = granule_table.stratum_from_classes(g["land_cover_data/pft_class"][:],
                                                     g["land_cover_data/region_class"][:])
            assert list(got) == expected, beam


def test_table_json_round_trip_and_tampering(granule_table, tmp_path):
    path = write_model_table_json(granule_table, tmp_path / "table.json")
    back = read_model_table_json(path)
    assert back.strata["DBT_Af"].to_dict() == granule_table.strata["DBT_Af"].to_dict()
    doc = json.loads(path.read_text())
    doc["payload"]["strata"][0]["par"][0] += 1.0
    path.write_text(json.dumps(doc))
    with pytest.raises(ModelFileError, match="modified after it was written"):
        read_model_table_json(path)
    doc["format"] = "something-else"
    path.write_text(json.dumps(doc))
    with pytest.raises(ModelFileError, match="not 'sawa-l4a-model-table'"):
        read_model_table_json(path)
    path.write_text("not json at all")
    with pytest.raises(ModelFileError, match="not JSON"):
        read_model_table_json(path)
    with pytest.raises(SawaFileError, match="does not exist"):
        read_model_table_json(tmp_path / "absent.json")


def test_wrong_product_is_refused(l2a_path):
    with pytest.raises(WrongProductError, match="L4A"):
        read_model_table(l2a_path)


def test_packaged_file_is_shipped_with_package():
    assert PACKAGED_TABLE_PATH.name == "gedi_l4a_model_data.json"
    assert PACKAGED_TABLE_PATH.parent.name == "data" and PACKAGED_TABLE_PATH.exists()
