"""sawa download against a local fake archive: resume, skip, checksum verification, credentials."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import shutil

import pytest
from click.testing import CliRunner

from fusion.cli import main
from fusion.download import LocalSource, RemoteGranule, country_bbox, download
from waveform.errors import ConfigError, SawaFileError, SawaValueError

DAY0 = dt.date(2019, 4, 18)
DAY1 = dt.date(2019, 4, 30)
BBOX = (-44.2, -13.8, -44.1, -13.7)


@pytest.fixture()
def archive(tmp_path, l1b_path, l2a_path):
    folder = tmp_path / "archive"
    folder.mkdir()
    shutil.copy(l1b_path, folder / l1b_path.name)
    shutil.copy(l2a_path, folder / l2a_path.name)
    return folder


def test_fetch_then_skip(archive, tmp_path, l1b_path):
    out = tmp_path / "dl"
    source = LocalSource(archive)
    first = download(["L1B", "L2A"], BBOX, DAY0, DAY1, out, source=source)
    assert [r.status for r in first] == ["downloaded", "downloaded"]
    assert (out / l1b_path.name).read_bytes() == l1b_path.read_bytes()
    again = download(["L1B", "L2A"], BBOX, DAY0, DAY1, out, source=source)
    assert [r.status for r in again] == ["skipped", "skipped"]
    manifest = json.loads((out / "sawa_download_manifest.json").read_text())
    assert manifest["files"][0]["sha256"] == hashlib.sha256(l1b_path.read_bytes()).hexdigest()


def test_date_filter(archive, tmp_path):
    # the granules were acquired on 2019-04-18 (day 108)
    assert download(["L1B"], BBOX, dt.date(2020, 1, 1), dt.date(2020, 2, 1), tmp_path / "x",
                    source=LocalSource(archive)) == []


def test_resume_partial_transfer(archive, tmp_path, l1b_path):
    out = tmp_path / "dl"
    out.mkdir()
    data = l1b_path.read_bytes()
    (out / (l1b_path.name + ".part")).write_bytes(data[:1_000_000])  # an interrupted earlier run
    source = LocalSource(archive)
    res = download(["L1B"], BBOX, DAY0, DAY1, out, source=source)
    assert res[0].status == "resumed"
    assert source.opened == [(l1b_path.name, 1_000_000)]
    assert (out / l1b_path.name).read_bytes() == data
    assert not (out / (l1b_path.name + ".part")).exists()


def test_checksum_mismatch_is_an_error_and_keeps_nothing_final(archive, tmp_path, l1b_path):
    class Corrupting(LocalSource):
        def search(self, product, bbox, start, end):
            return [RemoteGranule(g.product, g.name, g.url, g.size_bytes, "0" * 64, "SHA256")
                    for g in super().search(product, bbox, start, end)]

    out = tmp_path / "dl"
    with pytest.raises(SawaFileError, match="does not match the archive's size/checksum"):
        download(["L1B"], BBOX, DAY0, DAY1, out, source=Corrupting(archive))
    assert not (out / l1b_path.name).exists()


def test_bad_requests(tmp_path):
    with pytest.raises(SawaValueError, match="bounding box"):
        download(["L1B"], (10, 0, 5, 1), DAY0, DAY1, tmp_path, source=LocalSource(tmp_path))
    with pytest.raises(SawaValueError, match="ends"):
        download(["L1B"], BBOX, DAY1, DAY0, tmp_path, source=LocalSource(tmp_path))
    with pytest.raises(SawaValueError, match="unknown GEDI product"):
        download(["L3"], BBOX, DAY0, DAY1, tmp_path, source=LocalSource(tmp_path))


def test_country_bbox(countries_path):
    w, s, e, n = country_bbox("BRA", countries_path)
    assert -74.5 < w < -73 and -34.5 < s < -33 and -35 < e < -34 and 4.5 < n < 6
    # Natural Earth has ISO_A3 = -99 for France: ADM0_A3 is used as the fallback
    w, s, e, n = country_bbox("FRA", countries_path)
    assert n <= 51.6  # clipped to GEDI coverage
    with pytest.raises(SawaValueError, match="XYZ"):
        country_bbox("XYZ", countries_path)


def test_missing_credentials_message(monkeypatch, tmp_path):
    from fusion.download import EarthaccessSource

    for var in ("EARTHDATA_USERNAME", "EARTHDATA_PASSWORD", "EARTHDATA_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no_netrc"))
    with pytest.raises(ConfigError, match="no Earthdata Login credentials"):
        EarthaccessSource()


def test_cli_with_mirror(archive, tmp_path):
    out = tmp_path / "cli"
    result = CliRunner().invoke(main, ["download", "--product", "L1B", "--bbox", *map(str, BBOX),
                                       "--start", "2019-04-18", "--end", "2019-04-30", "-o", str(out),
                                       "--mirror", str(archive), "--quiet"])
    assert result.exit_code == 0, result.output
    assert "1 granule(s)" in result.output and "1 downloaded" in result.output
