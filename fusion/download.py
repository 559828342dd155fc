"""Search and fetch GEDI granules (L1B, L2A, L2B, L4A) from NASA Earthdata.

Search and transfer go through a *source* object so that the logic (resume,
skip complete files, size/checksum verification, manifest) is tested offline
against a local fake (:class:`LocalSource`); :class:`EarthaccessSource` is the
real one, built on ``earthaccess`` (optional extra ``sawa[download]``).

Collections (NASA CMR short names, version 002 / 2.1):
GEDI01_B, GEDI02_A, GEDI02_B (LP DAAC) and GEDI_L4A_AGB_Density_V2_1_2056
(ORNL DAAC, doi:10.3334/ORNLDAAC/2056).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol

from waveform.errors import ConfigError, SawaFileError, SawaValueError
from waveform.outputs import write_json_atomic

#: Product code -> (CMR short name, version).
COLLECTIONS = {
    "L1B": ("GEDI01_B", "002"),
    "L2A": ("GEDI02_A", "002"),
    "L2B": ("GEDI02_B", "002"),
    "L4A": ("GEDI_L4A_AGB_Density_V2_1_2056", "2.1"),
}
#: GEDI coverage: the ISS orbit inclination limits footprints to 51.6 S .. 51.6 N (Dubayah et al. 2020).
GEDI_MAX_ABS_LATITUDE_DEG = 51.6
#: First day of GEDI science data (2019-04-18, start of the mission's data record).
GEDI_FIRST_DAY = dt.date(2019, 4, 18)
#: Transfer block size (bytes).
_BLOCK_BYTES = 1 << 20
#: Manifest kept in the download folder.
MANIFEST_NAME = "sawa_download_manifest.json"


@dataclass(frozen=True)
class RemoteGranule:
    """One granule found by a search."""

    product: str
    name: str
    url: str
    size_bytes: int | None = None
    checksum: str | None = None
    checksum_algorithm: str | None = None  # e.g. "MD5", "SHA256"


class GranuleSource(Protocol):
    def search(self, product: str, bbox: tuple[float, float, float, float],
               start: dt.date, end: dt.date) -> list[RemoteGranule]: ...

    def open(self, granule: RemoteGranule, offset: int) -> Iterator[bytes]: ...


# ------------------------------------------------------------------ sources
class EarthaccessSource:
    """NASA Earthdata through ``earthaccess`` (needs Earthdata Login credentials)."""

    def __init__(self) -> None:
        has_env = bool(os.environ.get("EARTHDATA_USERNAME") and os.environ.get("EARTHDATA_PASSWORD"))
        has_token = bool(os.environ.get("EARTHDATA_TOKEN"))
        netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
        has_netrc = netrc.exists() and "urs.earthdata.nasa.gov" in netrc.read_text(errors="ignore")
        if not (has_env or has_token or has_netrc):
            raise ConfigError(
                "no Earthdata Login credentials: set EARTHDATA_USERNAME and EARTHDATA_PASSWORD (or EARTHDATA_TOKEN), "
                f"or add a 'machine urs.earthdata.nasa.gov' entry to {netrc}; register at urs.earthdata.nasa.gov"
            )
        try:
            import earthaccess
        except ImportError as exc:
            raise ConfigError(
                "sawa download needs the optional package earthaccess: pip install 'sawa[download]'"
            ) from exc
        self._ea = earthaccess
        strategy = "environment" if (has_env or has_token) else "netrc"
        auth = earthaccess.login(strategy=strategy)
        if not getattr(auth, "authenticated", False):
            raise ConfigError(f"Earthdata login with strategy {strategy!r} failed: check the credentials")
        self._session = earthaccess.get_requests_https_session()

    def search(self, product, bbox, start, end):
        short_name, version = COLLECTIONS[product]
        results = self._ea.search_data(short_name=short_name, version=version, bounding_box=tuple(bbox),
                                       temporal=(start.isoformat(), end.isoformat()))
        out = []
        for r in results:
            links = [u for u in r.data_links() if u.endswith(".h5")]
            if not links:
                continue
            size, checksum, algo = _umm_size_checksum(r["umm"], Path(links[0]).name)
            out.append(RemoteGranule(product, Path(links[0]).name, links[0], size, checksum, algo))
        return out

    def open(self, granule, offset):
        headers = {"Range": f"bytes={offset}-"} if offset else {}
        resp = self._session.get(granule.url, headers=headers, stream=True, timeout=120)
        resp.raise_for_status()
        if offset and resp.status_code != 206:
            raise SawaFileError(f"server ignored the resume request for {granule.name}")
        yield from resp.iter_content(_BLOCK_BYTES)


def _umm_size_checksum(umm: dict, name: str) -> tuple[int | None, str | None, str | None]:
    """Size (bytes) and checksum of file ``name`` from a CMR UMM-G record."""
    units = {"B": 1, "KB": 1024, "MB": 1024**2, "GB": 1024**3}
    for info in umm.get("DataGranule", {}).get("ArchiveAndDistributionInformation", []):
        if info.get("Name") != name:
            continue
        size = info.get("SizeInBytes")
        if size is None and "Size" in info:
            size = int(float(info["Size"]) * units.get(info.get("SizeUnit", "B"), 1))
        ck = info.get("Checksum") or {}
        return (int(size) if size is not None else None, ck.get("Value"), ck.get("Algorithm"))
    return None, None, None


class LocalSource:
    """A fake archive: a folder of granule files, searched by file name (for offline tests and mirrors).

    Granules are matched by product prefix and by the acquisition date in the
    name (``GEDI01_B_YYYYDDD...``); ``bbox`` is not checked (a local folder has
    no footprints index).
    """

    def __init__(self, folder: str | os.PathLike, checksum_algorithm: str = "SHA256"):
        self.folder = Path(folder)
        self.algorithm = checksum_algorithm
        self.opened: list[tuple[str, int]] = []

    def search(self, product, bbox, start, end):
        prefix = {"L1B": "GEDI01_B", "L2A": "GEDI02_A", "L2B": "GEDI02_B", "L4A": "GEDI04_A"}[product]
        out = []
        for p in sorted(self.folder.glob(f"{prefix}_*.h5")):
            day = _granule_date(p.name)
            if day is not None and not (start <= day <= end):
                continue
            digest = hashlib.new(self.algorithm.lower(), p.read_bytes()).hexdigest()
            out.append(RemoteGranule(product, p.name, p.as_uri(), p.stat().st_size, digest, self.algorithm))
        return out

    def open(self, granule, offset):
        self.opened.append((granule.name, offset))
        with open(self.folder / granule.name, "rb") as fh:
            fh.seek(offset)
            yield from iter(lambda: fh.read(_BLOCK_BYTES), b"")


def _granule_date(name: str) -> dt.date | None:
    """Acquisition date from a GEDI file name (``..._YYYYDDDHHMMSS_...``)."""
    parts = name.split("_")
    for part in parts[2:3]:
        if len(part) >= 7 and part[:7].isdigit():
            year, doy = int(part[:4]), int(part[4:7])
            return dt.date(year, 1, 1) + dt.timedelta(days=doy - 1)
    return None


# ------------------------------------------------------------------ search + fetch
def country_bbox(iso3: str, countries_path: str | os.PathLike) -> tuple[float, float, float, float]:
    """Bounding box (west, south, east, north) of a country of an admin-0 polygon file, clipped to GEDI latitudes."""
    import geopandas as gpd

    gdf = gpd.read_file(countries_path)
    key = iso3.upper()
    cols = [c for c in ("iso3", "ISO_A3", "ADM0_A3", "ISO_A3_EH") if c in gdf.columns]
    match = gdf[gdf[cols].eq(key).any(axis=1)] if cols else gdf.iloc[0:0]
    if match.empty:
        raise SawaValueError(f"country {iso3!r} is not in {countries_path} (looked in columns {', '.join(cols)})")
    w, s, e, n = match.to_crs("EPSG:4326").total_bounds
    s = max(s, -GEDI_MAX_ABS_LATITUDE_DEG)
    n = min(n, GEDI_MAX_ABS_LATITUDE_DEG)
    if s >= n:
        raise SawaValueError(f"country {iso3} lies outside GEDI's coverage (51.6 S .. 51.6 N)")
    return float(w), float(s), float(e), float(n)


def validate_request(bbox, start: dt.date, end: dt.date) -> None:
    w, s, e, n = bbox
    if not (-180 <= w < e <= 180 and -90 <= s < n <= 90):
        raise SawaValueError(f"bounding box {bbox} is not (west, south, east, north) in degrees with west < east, south < north")
    if end < start:
        raise SawaValueError(f"date range ends ({end}) before it starts ({start})")


@dataclass
class DownloadResult:
    name: str
    path: str
    status: str  # "downloaded", "resumed", "skipped" (already complete)
    bytes: int
    sha256: str


def download(
    products: Sequence[str],
    bbox: tuple[float, float, float, float],
    start: dt.date,
    end: dt.date,
    out_dir: str | os.PathLike,
    source: GranuleSource | None = None,
    progress: bool = False,
) -> list[DownloadResult]:
    """Search and fetch granules; resumable, skips complete files, verifies size and checksum.

    Partial transfers are kept as ``NAME.part`` and resumed on the next call;
    a file is renamed to its final name only after its size and checksum
    match the archive's. A manifest (``sawa_download_manifest.json``) lists
    every file with its sha256.
    """
    validate_request(bbox, start, end)
    unknown = [p for p in products if p not in COLLECTIONS]
    if unknown:
        raise SawaValueError(f"unknown GEDI product(s) {unknown}; choose from {', '.join(COLLECTIONS)}")
    source = source or EarthaccessSource()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    results = []
    for product in products:
        for granule in source.search(product, bbox, start, end):
            results.append(_fetch(source, granule, out, progress))
    manifest = {
        "request": {"products": list(products), "bbox": list(bbox), "start": start.isoformat(), "end": end.isoformat()},
        "files": [asdict(r) for r in results],
    }
    write_json_atomic(out / MANIFEST_NAME, manifest)
    return results


def _fetch(source: GranuleSource, g: RemoteGranule, out: Path, progress: bool) -> DownloadResult:
    final = out / g.name
    part = out / (g.name + ".part")
    if final.exists() and _verified(final, g):
        return DownloadResult(g.name, str(final), "skipped", final.stat().st_size, _sha256(final))
    offset = part.stat().st_size if part.exists() else 0
    if g.size_bytes is not None and offset > g.size_bytes:
        part.unlink()
        offset = 0
    status = "resumed" if offset else "downloaded"
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=g.size_bytes, initial=offset, unit="B", unit_scale=True, desc=g.name, leave=False)
    with open(part, "ab") as fh:
        for block in source.open(g, offset):
            fh.write(block)
            if bar is not None:
                bar.update(len(block))
        fh.flush()
        os.fsync(fh.fileno())
    if bar is not None:
        bar.close()
    if not _verified(part, g):
        bad = part.with_suffix(part.suffix + ".bad")
        shutil.move(part, bad)
        raise SawaFileError(
            f"{g.name}: downloaded file does not match the archive's size/checksum "
            f"(size {bad.stat().st_size} vs {g.size_bytes}); kept as {bad.name}, rerun to fetch again"
        )
    os.replace(part, final)
    return DownloadResult(g.name, str(final), status, final.stat().st_size, _sha256(final))


def _verified(path: Path, g: RemoteGranule) -> bool:
    if g.size_bytes is not None and path.stat().st_size != g.size_bytes:
        return False
    if g.checksum and g.checksum_algorithm:
        algo = g.checksum_algorithm.replace("-", "").lower()
        h = hashlib.new(algo)
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(_BLOCK_BYTES), b""):
                h.update(block)
        return h.hexdigest().lower() == g.checksum.lower()
    return g.size_bytes is not None


def _sha256(path: Path) -> str:
    from waveform.outputs import sha256_file

    return sha256_file(path)


def results_json(results: list[DownloadResult]) -> str:
    return json.dumps([asdict(r) for r in results], indent=2)


__all__ = ["COLLECTIONS", "RemoteGranule", "EarthaccessSource", "LocalSource", "country_bbox", "download",
           "DownloadResult", "validate_request"]
