"""Official reference totals: FAO FRA 2020 country figures, GEDI published figures, L4B grids.

FAO FRA 2020 (``FRACarbonStock.csv``, FAO English country names) gives per country the carbon
densities of above- and below-ground biomass (``agb``, ``bgb``, t C/ha) and the biomass carbon
stock (``carbon_stock_biomass_total``, thousand tonnes C) but no forest area. Derivation (every
step is a column of :func:`read_fao_fra`):

1. ``biomass_carbon_pg = carbon_stock_biomass_total / 1e6`` (1 Pg = 1e6 kt);
2. ``forest_area_ha = carbon_stock_biomass_total x 1000 / (agb + bgb)`` (t C / (t C/ha));
3. ``agb_carbon_pg = forest_area_ha x agb / 1e9`` (= biomass carbon x agb/(agb+bgb));
4. ``fao_agb_pg = agb_carbon_pg / CF`` with CF = 0.47 (IPCC 2006 default; FRA countries without
   national factors use it; those with national factors may differ, so this is approximate).

Check (MANIFEST examples): Brazil 51,981,173.53 kt C / (84.71 + 19.96) t C/ha = 496.6 Mha (FRA
2020 reports 496.6 Mha of forest for Brazil), China 220.0 Mha, USA 309.8 Mha.

Country names map to ISO 3166-1 alpha-3 with ``fusion/data/fao_country_iso3.csv`` (built by
:func:`build_fao_iso3_table`: Natural Earth names, then the manual entries of
:data:`FAO_MANUAL_ISO3`; the ``iso3166_name`` column is the ISO 3166-1 English short name of the
code, checked for every row against the ISO 3166-1 list as tabulated in
github.com/lukes/ISO-3166-Countries-with-Regional-Codes ``slim-3/slim-3.csv``, commit 6338cde3).
Names not in the table are reported, never dropped silently.
"""

from __future__ import annotations

import os
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd

from waveform.errors import RasterError, SawaFileError, SawaValueError
from waveform.outputs import sha256_file

from .constants import (
    DATA_DIR,
    FAO_FRA_CARBON_FRACTION,
    GEDI_L4B_CRS,
    KT_PER_PG,
    MG_PER_PG,
)
from .zonal import RasterInput, _Reader, zonal_totals

FAO_ISO3_TABLE_PATH = DATA_DIR / "fao_country_iso3.csv"
GEDI_REFERENCE_TOTALS_PATH = DATA_DIR / "gedi_reference_totals.csv"
FAO_COLUMNS = ("country", "agb", "bgb", "deadwood", "litter", "soc", "carbon_stock_biomass_total", "carbon_stock_total")

#: FAO FRA names that no Natural Earth 1:110m name matches: small territories (not in the 110m
#: map) and FAO-specific spellings. Codes: ISO 3166-1 alpha-3 (each row's ISO short name is kept
#: in the shipped table's ``iso3166_name`` column).
FAO_MANUAL_ISO3 = {
    "American Samoa": "ASM", "Andorra": "AND", "Anguilla": "AIA", "Antigua and Barbuda": "ATG",
    "Aruba": "ABW", "Bahrain": "BHR", "Barbados": "BRB", "Bermuda": "BMU",
    "Bonaire, Sint Eustatius and Saba": "BES", "British Virgin Islands": "VGB", "Cabo Verde": "CPV",
    "Cayman Islands": "CYM", "Comoros": "COM", "Cook Islands": "COK", "Curaçao": "CUW",
    "Dominica": "DMA", "Falkland Islands (malvinas)": "FLK", "Faroe Islands": "FRO",
    "French Guiana": "GUF", "French Polynesia": "PYF", "Gibraltar": "GIB", "Grenada": "GRD",
    "Guadeloupe": "GLP", "Guam": "GUM", "Guernsey": "GGY", "Holy See": "VAT", "Isle of Man": "IMN",
    "Jersey": "JEY", "Kiribati": "KIR", "Liechtenstein": "LIE", "Maldives": "MDV", "Malta": "MLT",
    "Marshall Islands": "MHL", "Martinique": "MTQ", "Mauritius": "MUS", "Mayotte": "MYT",
    "Micronesia (Federated States of)": "FSM", "Monaco": "MCO", "Montserrat": "MSR", "Nauru": "NRU",
    "Niue": "NIU", "Norfolk Island": "NFK", "North Macedonia": "MKD", "Northern Mariana Islands": "MNP",
    "Palau": "PLW", "Pitcairn": "PCN", "Réunion": "REU", "Saint Barthélemy": "BLM",
    "Saint Helena": "SHN", "Saint Kitts and Nevis": "KNA", "Saint Lucia": "LCA",
    "Saint Martin (French part)": "MAF", "Saint Pierre and Miquelon": "SPM",
    "Saint Vincent and the Grenadines": "VCT", "Samoa": "WSM", "San Marino": "SMR",
    "Sao Tome and Principe": "STP", "Seychelles": "SYC", "Singapore": "SGP",
    "Sint Maarten (Dutch part)": "SXM", "State Of Palestine": "PSE",
    "Svalbard and Jan Mayen Islands": "SJM", "Tokelau": "TKL", "Tonga": "TON",
    "Turks and Caicos Islands": "TCA", "Tuvalu": "TUV", "United States Virgin Islands": "VIR",
    "Viet Nam": "VNM", "Wallis and Futuna Islands": "WLF",
}
#: Scope differences between FAO rows and Natural Earth polygons, kept in the table's note column.
FAO_SCOPE_NOTES = {
    "FRA": "FAO France excludes the overseas departments (French Guiana, Guadeloupe, Martinique, Réunion, Mayotte are FAO rows of their own); the Natural Earth FRA polygon includes French Guiana",
    "NOR": "the Natural Earth NOR polygon includes Svalbard (FAO row SJM)",
    "SOM": "Natural Earth maps Somaliland separately (ADM0_A3 SOL, not ISO)",
    "CYP": "Natural Earth maps Northern Cyprus separately (ADM0_A3 CYN, not ISO)",
    "SRB": "Natural Earth maps Kosovo separately (ADM0_A3 KOS, not ISO)",
}
_NE_NAME_FIELDS = ("NAME", "NAME_LONG", "ADMIN", "FORMAL_EN")


def normalise_country_name(name: str) -> str:
    """Case-, accent-form- and apostrophe-insensitive key (FAO writes "Côte d’Ivoire")."""
    s = unicodedata.normalize("NFKC", str(name)).replace("\u2019", "'").replace("\u2018", "'")
    return " ".join(s.casefold().split())


# --- FAO ---------------------------------------------------------------------------------------
def _read_fao_csv(path: str | os.PathLike) -> pd.DataFrame:
    path = Path(path)
    if not path.is_file():
        raise SawaFileError(f"FAO FRA table {path} does not exist")
    try:
        df = pd.read_csv(path, encoding="utf-8-sig", dtype={"country": str})
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise SawaFileError(f"cannot parse FAO FRA table {path}: {exc}") from exc
    missing = [c for c in FAO_COLUMNS if c not in df.columns]
    if missing:
        raise SawaFileError(f"FAO FRA table {path} lacks columns {missing} (has {list(df.columns)})")
    for col in FAO_COLUMNS[1:]:
        df[col] = pd.to_numeric(df[col], errors="raise")
    if df["country"].isna().any():
        raise SawaFileError(f"FAO FRA table {path}: rows {list(df.index[df['country'].isna()])} have no country name")
    return df


def build_fao_iso3_table(fao_csv: str | os.PathLike, countries_path: str | os.PathLike) -> pd.DataFrame:
    """FAO name -> ISO3 table: Natural Earth names first, then :data:`FAO_MANUAL_ISO3`.

    Columns ``fao_name, iso3, match, note`` (the shipped table adds ``iso3166_name``). Names
    matched by neither are returned with an empty ``iso3`` and ``match = "unmatched"``.
    """
    from .zonal import _natural_earth_iso3

    fao = _read_fao_csv(fao_csv)
    ne = gpd.read_file(countries_path)
    lookup: dict[str, tuple[str, str]] = {}
    for _, row in ne.iterrows():
        code, _src = _natural_earth_iso3(row)
        for f in _NE_NAME_FIELDS:
            if f in row.index and isinstance(row[f], str):
                lookup.setdefault(normalise_country_name(row[f]), (code, f))
    manual = {normalise_country_name(k): v for k, v in FAO_MANUAL_ISO3.items()}
    rows = []
    for name in fao["country"]:
        key = normalise_country_name(name)
        if key in lookup:
            code, f = lookup[key]
            match = f"natural_earth:{f}"
        elif key in manual:
            code, match = manual[key], "manual"
        else:
            code, match = "", "unmatched"
        rows.append({"fao_name": name, "iso3": code, "match": match, "note": FAO_SCOPE_NOTES.get(code, "")})
    return pd.DataFrame(rows)


def load_fao_iso3_table(path: str | os.PathLike | None = None) -> pd.DataFrame:
    """The shipped FAO name -> ISO3 table (or a user's with the same columns)."""
    path = Path(path) if path is not None else FAO_ISO3_TABLE_PATH
    if not path.is_file():
        raise SawaFileError(f"FAO name -> ISO3 table {path} does not exist")
    table = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8")
    for col in ("fao_name", "iso3"):
        if col not in table.columns:
            raise SawaFileError(f"FAO name -> ISO3 table {path} lacks column {col!r}")
    dup = table["fao_name"].map(normalise_country_name).duplicated()
    if dup.any():
        raise SawaFileError(f"FAO name -> ISO3 table {path}: duplicated names {list(table.loc[dup, 'fao_name'])}")
    return table


@dataclass
class FaoFra:
    """FAO FRA 2020 per-country table with derived AGB (see module docstring) and the unmatched names."""

    table: pd.DataFrame
    unmatched: list[str] = field(default_factory=list)
    source: str = ""
    sha256: str = ""
    carbon_fraction: float = FAO_FRA_CARBON_FRACTION

    @property
    def total_biomass_carbon_pg(self) -> float:
        return float(self.table["biomass_carbon_pg"].sum(skipna=True))

    def by_iso3(self) -> pd.DataFrame:
        """Rows with an ISO3 code, indexed by it (for joins)."""
        return self.table[self.table["iso3"] != ""].set_index("iso3")


def read_fao_fra(path: str | os.PathLike, mapping: pd.DataFrame | str | os.PathLike | None = None,
                 carbon_fraction: float = FAO_FRA_CARBON_FRACTION) -> FaoFra:
    """Read FAO FRA 2020 carbon stocks, map names to ISO3 and derive forest area and AGB.

    Columns: ``fao_name, iso3, agb_tc_ha, bgb_tc_ha, biomass_carbon_kt, biomass_carbon_pg,
    forest_area_ha, agb_carbon_pg, bgb_carbon_pg, fao_agb_pg, derivation`` (``derivation`` says
    why a row has no AGB). Unmatched names are listed in ``FaoFra.unmatched`` and kept with an
    empty ``iso3``.
    """
    if not 0.3 <= carbon_fraction <= 0.6:
        raise SawaValueError(f"carbon_fraction {carbon_fraction} is outside 0.3..0.6 t C / t d.m.")
    df = _read_fao_csv(path)
    table = mapping if isinstance(mapping, pd.DataFrame) else load_fao_iso3_table(mapping)
    code_of = {normalise_country_name(n): c for n, c in zip(table["fao_name"], table["iso3"], strict=True)}
    iso3 = [code_of.get(normalise_country_name(n), "") for n in df["country"]]
    unmatched = [n for n, c in zip(df["country"], iso3, strict=True) if not c]
    agb = df["agb"].to_numpy(float)
    bgb = df["bgb"].to_numpy(float)
    kt = df["carbon_stock_biomass_total"].to_numpy(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        dens = agb + bgb
        # no forest: zero stock and zero densities give zero area (not NaN)
        area = np.where(dens > 0, kt * 1000.0 / dens, np.where(kt == 0, 0.0, np.nan))
        agb_c_pg = area * agb / MG_PER_PG
        bgb_c_pg = area * bgb / MG_PER_PG
    why = np.where(
        np.isnan(kt), "no biomass carbon stock reported",
        np.where(np.isnan(agb) | np.isnan(bgb), "no agb/bgb carbon density reported",
                 np.where((dens <= 0) & (kt > 0), "biomass carbon reported with zero carbon density", "")),
    )
    out = pd.DataFrame({
        "fao_name": df["country"].to_numpy(),
        "iso3": iso3,
        "agb_tc_ha": agb,
        "bgb_tc_ha": bgb,
        "biomass_carbon_kt": kt,
        "biomass_carbon_pg": kt / KT_PER_PG,
        "forest_area_ha": area,
        "agb_carbon_pg": agb_c_pg,
        "bgb_carbon_pg": bgb_c_pg,
        "fao_agb_pg": agb_c_pg / carbon_fraction,
        "derivation": why,
    })
    dup = out.loc[out["iso3"] != "", "iso3"].duplicated(keep=False)
    if dup.any():
        raise SawaValueError(f"FAO FRA table {path}: several names map to ISO3 {sorted(set(out.loc[dup[dup].index, 'iso3']))}")
    return FaoFra(out, unmatched, str(path), sha256_file(path), carbon_fraction)


# --- GEDI --------------------------------------------------------------------------------------
def read_gedi_reference_totals(path: str | os.PathLike | None = None) -> pd.DataFrame:
    """The shipped table of published GEDI / FAO / terrain-corrected AGB totals (Pg), with citations."""
    path = Path(path) if path is not None else GEDI_REFERENCE_TOTALS_PATH
    if not path.is_file():
        raise SawaFileError(f"GEDI reference totals {path} do not exist")
    df = pd.read_csv(path, dtype={"iso3": str}, keep_default_na=False, na_values={"agb_pg": [""]})
    need = ("region", "iso3", "estimate", "agb_pg", "citation", "verification")
    missing = [c for c in need if c not in df.columns]
    if missing:
        raise SawaFileError(f"GEDI reference totals {path} lack columns {missing}")
    df["agb_pg"] = pd.to_numeric(df["agb_pg"], errors="raise")
    return df


def gedi_reference_by_iso3(table: pd.DataFrame | None = None, estimate: str = "gedi_l4b") -> pd.DataFrame:
    """Country rows of one estimate (gedi_l4b, fao_fra_2020, gedi_terrain_corrected) as iso3 -> agb_pg."""
    t = read_gedi_reference_totals() if table is None else table
    known = sorted(set(t["estimate"]))
    if estimate not in known:
        raise SawaValueError(f"unknown GEDI reference estimate {estimate!r}; known: {known}")
    sel = t[(t["estimate"] == estimate) & (t["iso3"] != "")]
    return sel[["iso3", "region", "agb_pg", "citation"]].set_index("iso3")


def read_gedi_country_table(path: str | os.PathLike, iso3_col: str = "iso3", agb_col: str = "agb_pg",
                            se_col: str | None = None) -> pd.DataFrame:
    """A user-supplied GEDI country table (CSV) -> DataFrame(iso3, gedi_agb_pg[, gedi_agb_se_pg])."""
    path = Path(path)
    if not path.is_file():
        raise SawaFileError(f"GEDI country table {path} does not exist")
    df = pd.read_csv(path, dtype={iso3_col: str})
    for col in (iso3_col, agb_col, se_col):
        if col is not None and col not in df.columns:
            raise SawaFileError(f"GEDI country table {path} has no column {col!r} (columns: {list(df.columns)})")
    out = pd.DataFrame({"iso3": df[iso3_col].str.strip().str.upper(), "gedi_agb_pg": pd.to_numeric(df[agb_col], errors="raise")})
    if se_col:
        out["gedi_agb_se_pg"] = pd.to_numeric(df[se_col], errors="raise")
    bad = out[~out["iso3"].str.match(r"^[A-Z]{3}$")]
    if len(bad):
        raise SawaFileError(f"GEDI country table {path}: {iso3_col!r} values {list(bad['iso3'])} are not ISO3 codes")
    return out


def gedi_l4b_totals(mu_path: RasterInput, polygons, se_path: RasterInput | None = None,
                    id_col: str = "iso3", **kwargs) -> pd.DataFrame:
    """Country totals of a GEDI L4B-style grid (MU band: mean AGBD, Mg/ha; SE band optional).

    GEDI L4B GeoTIFFs are 1 km EASE-Grid 2.0 (EPSG:6933) with nodata -9999; any CRS is accepted
    (areas are ellipsoidal either way) but a grid in another CRS is noted in ``warnings``.
    Returns :func:`fusion.zonal.zonal_totals` with ``gedi_agb_pg`` / ``gedi_agb_se_pg`` columns.
    Note: L4B MU is the mean AGBD of *all* land in a cell, so these are land totals, not forest.
    """
    reader = _Reader(mu_path, "GEDI L4B MU")
    try:
        crs_note = "" if reader.crs.equals(GEDI_L4B_CRS) else f"grid CRS {reader.crs.to_string()} is not {GEDI_L4B_CRS}"
        if reader.nodata is None and reader._ds is not None:
            raise RasterError(f"GEDI L4B MU raster {reader.label} has no nodata value (L4B uses -9999)")
    finally:
        reader.close()
    res = zonal_totals(mu_path, polygons, id_col=id_col, se_raster=se_path, **kwargs)
    res["gedi_agb_pg"] = res["agb_pg"]
    res["gedi_agb_se_pg"] = res["agb_se_pg"]
    if crs_note:
        res["warnings"] = [f"{w}; {crs_note}" if w else crs_note for w in res["warnings"]]
    return res


# --- comparison --------------------------------------------------------------------------------
def _pct(diff: pd.Series, ref: pd.Series) -> pd.Series:
    with np.errstate(invalid="ignore", divide="ignore"):
        return pd.Series(np.where(ref > 0, 100.0 * diff / ref, np.nan), index=diff.index)


def compare_totals(ours: pd.DataFrame, fao: FaoFra | pd.DataFrame | None = None,
                   gedi: pd.DataFrame | None = None, id_col: str = "iso3") -> pd.DataFrame:
    """Per country: ours, FAO, GEDI AGB (Pg) and the differences ours - reference in Pg and %.

    ``ours``: :func:`fusion.zonal.zonal_totals` output (``agb_pg``, ``agb_se_pg``, optional
    ``carbon_pg``, ``name``). ``fao``: :class:`FaoFra` or a DataFrame with ``iso3, fao_agb_pg``.
    ``gedi``: DataFrame with ``iso3`` and ``gedi_agb_pg`` (or ``agb_pg``), e.g. from
    :func:`gedi_l4b_totals`, :func:`read_gedi_country_table` or :func:`gedi_reference_by_iso3`.
    ``attrs["ours_without_fao"]`` / ``["ours_without_gedi"]`` list our ids that have no reference.
    Percentages are relative to the reference; ``*_z`` is the difference in units of our SE.
    """
    if id_col not in ours.columns or "agb_pg" not in ours.columns:
        raise SawaValueError(f"ours must have columns {id_col!r} and 'agb_pg'; has {list(ours.columns)}")
    keep = [c for c in (id_col, "name", "agb_pg", "agb_se_pg", "agb_se_independent_pg", "carbon_pg", "carbon_se_pg") if c in ours.columns]
    out = ours[keep].copy().set_index(id_col)
    if fao is not None:
        f = fao.by_iso3() if isinstance(fao, FaoFra) else fao.set_index("iso3")
        if "fao_agb_pg" not in f.columns:
            raise SawaValueError("fao table needs a 'fao_agb_pg' column")
        out["fao_agb_pg"] = f["fao_agb_pg"].reindex(out.index)
        out["diff_fao_pg"] = out["agb_pg"] - out["fao_agb_pg"]
        out["diff_fao_pct"] = _pct(out["diff_fao_pg"], out["fao_agb_pg"])
    if gedi is not None:
        g = gedi.reset_index() if gedi.index.name == "iso3" else gedi
        col = "gedi_agb_pg" if "gedi_agb_pg" in g.columns else "agb_pg"
        if "iso3" not in g.columns or col not in g.columns:
            raise SawaValueError(f"gedi table needs 'iso3' and 'gedi_agb_pg' columns; has {list(g.columns)}")
        g = g.set_index("iso3")
        out["gedi_agb_pg"] = g[col].reindex(out.index)
        out["diff_gedi_pg"] = out["agb_pg"] - out["gedi_agb_pg"]
        out["diff_gedi_pct"] = _pct(out["diff_gedi_pg"], out["gedi_agb_pg"])
    if "agb_se_pg" in out.columns:
        with np.errstate(invalid="ignore", divide="ignore"):
            for ref in ("fao", "gedi"):
                if f"diff_{ref}_pg" in out.columns:
                    out[f"diff_{ref}_z"] = np.where(out["agb_se_pg"] > 0, out[f"diff_{ref}_pg"] / out["agb_se_pg"], np.nan)
    out = out.reset_index()
    if "fao_agb_pg" in out.columns:
        out.attrs["ours_without_fao"] = list(out.loc[out["fao_agb_pg"].isna(), id_col])
    if "gedi_agb_pg" in out.columns:
        out.attrs["ours_without_gedi"] = list(out.loc[out["gedi_agb_pg"].isna(), id_col])
    return out


__all__ = [
    "FAO_ISO3_TABLE_PATH",
    "FAO_MANUAL_ISO3",
    "FaoFra",
    "GEDI_REFERENCE_TOTALS_PATH",
    "build_fao_iso3_table",
    "compare_totals",
    "gedi_l4b_totals",
    "gedi_reference_by_iso3",
    "load_fao_iso3_table",
    "normalise_country_name",
    "read_fao_fra",
    "read_gedi_country_table",
    "read_gedi_reference_totals",
]
