"""Above-ground biomass -> carbon: carbon fractions and root-to-shoot ratios from one cited table.

Every factor is a row of ``fusion/data/carbon_factors.csv`` (columns ``factor, domain, zone,
forest_type, agb_min_mg_ha, agb_max_mg_ha, value, range_low, range_high, unit, citation,
verification, continent, origin``):

* ``carbon_fraction`` (t C / t dry matter): IPCC 2006 Guidelines Vol. 4 Ch. 4 Table 4.3, by
  climate domain (tropical, subtropical, temperate, boreal) and, in temperate/boreal forests,
  broadleaf (0.48) or conifer (0.51); default 0.47 in every domain.
* ``root_shoot_ratio`` R (below-ground / above-ground dry biomass): IPCC 2006 Table 4.4 by FAO
  global ecological zone and above-ground biomass class (``agb_min_mg_ha < AGB <=
  agb_max_mg_ha``; empty bounds are open), and in temperate zones by forest type (conifer,
  quercus, eucalyptus, other broadleaf). The ``verification`` column says, row by row, whether
  the value was corroborated in this work and how.

Continent and forest origin: the IPCC 2019 Refinement Table 4.4 also splits root-to-shoot ratios
by continent (africa, americas, asia, europe, oceania) and forest origin (natural, planted). The
shipped table is IPCC 2006 only: its ``continent`` and ``origin`` cells are all ``*`` (any), so
``continent=``/``origin=`` change nothing with it. A 2019-Refinement (or national) table with
continent/origin rows can be loaded with ``CarbonFactors.load(path)`` (audit: ``[carbon] factors``,
``continent``, ``origin``); the two columns are optional there (missing column or empty cell =
``*``). For a zone, the most specific rows are used: those of the given continent if the table has
any for the zone, else its ``*`` rows; the same for origin (continent first). A zone whose rows
are all continent- (origin-) specific needs ``continent=`` (``origin=``). Natural Earth's
``CONTINENT`` names "North America" and "South America" mean americas. Continent and origin apply
to root-to-shoot rows only (IPCC 2019 did not update the carbon fractions of Table 4.3).

Carbon of a pixel (IPCC 2006 Vol. 4 Eq. 2.8 with BCEF replaced by a biomass map):

    AGC = AGB x CF;  BGB = AGB x R(zone, AGB);  BGC = BGB x CF;  C = AGC + BGC

Uncertainty: the standard error of AGB is propagated linearly with the factors held fixed
(``SE(AGC) = SE(AGB) x CF``, ``SE(BGC) = SE(AGB) x CF x R``, ``SE(C) = SE(AGB) x CF x (1 + R)``):
AGC and BGC come from the same AGB, so their errors are fully correlated and add. The IPCC
factor ranges are kept in the table but not propagated.

Ecological zones are FAO GEZ 2010 zones, named as in ``fusion/data/ecological_zones.csv`` or
given per pixel as GEZ integer codes (11 tropical rain forest ... 50 polar).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from waveform.errors import SawaFileError, SawaValueError

from .constants import DATA_DIR, IPCC_DEFAULT_CARBON_FRACTION

#: The shipped factor table and the GEZ code table.
CARBON_FACTORS_PATH = DATA_DIR / "carbon_factors.csv"
ECOLOGICAL_ZONES_PATH = DATA_DIR / "ecological_zones.csv"

CARBON_FRACTION = "carbon_fraction"
ROOT_SHOOT_RATIO = "root_shoot_ratio"
_FACTOR_COLUMNS = (
    "factor", "domain", "zone", "forest_type", "agb_min_mg_ha", "agb_max_mg_ha", "value",
    "range_low", "range_high", "unit", "citation", "verification",
)
#: Optional columns (missing column or empty cell = "*", any) of root-to-shoot rows.
_OPTIONAL_COLUMNS = ("continent", "origin")
DOMAINS = ("tropical", "subtropical", "temperate", "boreal", "polar")
#: Continents of the IPCC 2019 Refinement Table 4.4, and other accepted names for them.
CONTINENTS = ("africa", "americas", "asia", "europe", "oceania")
CONTINENT_ALIASES = {"north america": "americas", "south america": "americas"}  # Natural Earth CONTINENT
#: Forest origins of the IPCC 2019 Refinement Table 4.4.
ORIGINS = ("natural", "planted")
#: Forest types of the root-to-shoot table, and the carbon-fraction group each belongs to.
FOREST_TYPE_CF_GROUP = {
    "conifer": "conifer",
    "quercus": "broadleaf",
    "eucalyptus": "broadleaf",
    "other broadleaf": "broadleaf",
    "broadleaf": "broadleaf",
}
#: Names used by IPCC 2006 Table 4.4 (and common spellings) for the GEZ zones of the table.
ZONE_ALIASES = {
    "tropical rainforest": "tropical rain forest",
    "tropical moist deciduous forest": "tropical moist forest",
    "tropical mountain systems": "tropical mountain system",
    "subtropical mountain systems": "subtropical mountain system",
    "temperate mountain systems": "temperate mountain system",
    "boreal mountain systems": "boreal mountain system",
}


def _normalise(name: str) -> str:
    return " ".join(str(name).strip().lower().replace("_", " ").split())


def canonical_continent(name: str) -> str:
    """IPCC 2019 continent name (africa, americas, asia, europe, oceania) of ``name``.

    Case-insensitive; Natural Earth's "North America" and "South America" give americas.
    """
    c = _normalise(name)
    c = CONTINENT_ALIASES.get(c, c)
    if c not in CONTINENTS:
        raise SawaValueError(
            f"unknown continent {name!r}; known continents: {', '.join(CONTINENTS)} "
            "(Natural Earth 'North America'/'South America' = americas)"
        )
    return c


def canonical_origin(name: str) -> str:
    """IPCC 2019 forest origin name (natural, planted) of ``name`` (case-insensitive)."""
    o = _normalise(name)
    if o not in ORIGINS:
        raise SawaValueError(f"unknown forest origin {name!r}; known origins: {', '.join(ORIGINS)}")
    return o


@dataclass(frozen=True)
class CarbonResult:
    """Carbon densities (t C/ha, i.e. Mg C/ha) of :func:`agb_to_carbon`, same shape as the AGB."""

    agc: np.ndarray
    bgc: np.ndarray
    total_c: np.ndarray
    carbon_fraction: np.ndarray
    root_shoot_ratio: np.ndarray
    agc_se: np.ndarray | None = None
    bgc_se: np.ndarray | None = None
    total_c_se: np.ndarray | None = None

    def as_dict(self) -> dict[str, np.ndarray | None]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}

    def __getitem__(self, key: str) -> np.ndarray | None:  # dict-style access: result["agc"]
        if key not in self.__dataclass_fields__:
            raise KeyError(f"no carbon output {key!r}; have {sorted(self.__dataclass_fields__)}")
        return getattr(self, key)


class CarbonFactors:
    """The cited factor table: carbon fractions and root-to-shoot ratios.

    ``CarbonFactors.load()`` reads the shipped table; ``CarbonFactors.load(path)`` a user's table
    with the same columns (e.g. 2019-Refinement or national values), optionally with
    ``continent`` and ``origin`` columns (see the module docstring).
    """

    def __init__(self, table: pd.DataFrame, zones: pd.DataFrame, source: str = "") -> None:
        missing = [c for c in _FACTOR_COLUMNS if c not in table.columns]
        if missing:
            raise SawaValueError(f"carbon factor table {source or '<DataFrame>'} lacks columns {missing}")
        t = table.copy()
        for col in ("factor", "domain", "zone", "forest_type"):
            t[col] = t[col].fillna("*").map(_normalise)
        for col, canonical in zip(_OPTIONAL_COLUMNS, (canonical_continent, canonical_origin), strict=True):
            if col not in t.columns:
                t[col] = "*"
            t[col] = t[col].fillna("*").map(_normalise).replace("", "*")
            try:
                t[col] = t[col].map(lambda v, f=canonical: v if v == "*" else f(v))
            except SawaValueError as exc:
                raise SawaValueError(f"carbon factor table {source or '<DataFrame>'}, column {col!r}: {exc}") from None
        for col in ("agb_min_mg_ha", "agb_max_mg_ha", "value", "range_low", "range_high"):
            t[col] = pd.to_numeric(t[col], errors="coerce")
        bad = t[~t["factor"].isin([CARBON_FRACTION.replace("_", " "), ROOT_SHOOT_RATIO.replace("_", " ")])]
        if len(bad):
            raise SawaValueError(
                f"carbon factor table {source or '<DataFrame>'}: unknown factor(s) {sorted(set(bad['factor']))} "
                f"(expected {CARBON_FRACTION!r} or {ROOT_SHOOT_RATIO!r})"
            )
        t["factor"] = t["factor"].str.replace(" ", "_")
        specific_cf = (t["factor"] == CARBON_FRACTION) & ((t["continent"] != "*") | (t["origin"] != "*"))
        if specific_cf.any():
            raise SawaValueError(
                f"carbon factor table {source or '<DataFrame>'}: carbon fraction rows {list(t.index[specific_cf])} "
                "have a continent or origin; these apply to root-to-shoot ratio rows only (leave them empty or '*')"
            )
        if t["value"].isna().any() or (t["value"] < 0).any():
            rows = list(t.index[t["value"].isna() | (t["value"] < 0)])
            raise SawaValueError(f"carbon factor table {source or '<DataFrame>'}: missing or negative value in rows {rows}")
        no_cite = t["citation"].isna() | (t["citation"].astype(str).str.strip() == "")
        if no_cite.any():
            raise SawaValueError(
                f"carbon factor table {source or '<DataFrame>'}: rows {list(t.index[no_cite])} have no citation"
            )
        self.table = t.reset_index(drop=True)
        z = zones.copy()
        z["zone"] = z["zone"].map(_normalise)
        z["domain"] = z["domain"].map(_normalise)
        z["gez_code"] = z["gez_code"].astype(int)
        self.zones = z.reset_index(drop=True)
        self.source = source
        self._zone_domain = dict(zip(self.zones["zone"], self.zones["domain"], strict=True))
        self._code_zone = dict(zip(self.zones["gez_code"], self.zones["zone"], strict=True))

    # --- loading -------------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | os.PathLike | None = None, zones_path: str | os.PathLike | None = None) -> CarbonFactors:
        """Read a factor table (default: the shipped ``fusion/data/carbon_factors.csv``)."""
        path = Path(path) if path is not None else CARBON_FACTORS_PATH
        zones_path = Path(zones_path) if zones_path is not None else ECOLOGICAL_ZONES_PATH
        for p in (path, zones_path):
            if not p.is_file():
                raise SawaFileError(f"carbon factor table {p} does not exist")
        try:
            table = pd.read_csv(path, dtype={"zone": str, "forest_type": str, "domain": str,
                                              "continent": str, "origin": str})
            zones = pd.read_csv(zones_path)
        except (pd.errors.ParserError, UnicodeDecodeError) as exc:
            raise SawaFileError(f"cannot parse carbon factor table {path}: {exc}") from exc
        return cls(table, zones, source=str(path))

    # --- zones ---------------------------------------------------------------------------------
    @property
    def zone_names(self) -> list[str]:
        return list(self.zones["zone"])

    def canonical_zone(self, zone: str) -> str:
        """GEZ zone name for ``zone`` (case-insensitive, IPCC aliases accepted), or a domain name."""
        z = _normalise(zone)
        z = ZONE_ALIASES.get(z, z)
        if z in self._zone_domain or z in DOMAINS:
            return z
        raise SawaValueError(
            f"unknown ecological zone {zone!r}; known zones: {', '.join(self.zone_names)} "
            f"(or a climate domain: {', '.join(DOMAINS)})"
        )

    def domain_of(self, zone: str) -> str:
        """Climate domain (tropical, subtropical, temperate, boreal, polar) of a zone or domain."""
        z = self.canonical_zone(zone)
        return z if z in DOMAINS else self._zone_domain[z]

    def zone_of_code(self, code: int) -> str:
        """GEZ 2010 zone name of an integer ``gez_code``."""
        try:
            return self._code_zone[int(code)]
        except (KeyError, ValueError):
            raise SawaValueError(
                f"unknown GEZ ecological zone code {code!r}; known codes: {sorted(self._code_zone)}"
            ) from None

    # --- factors -------------------------------------------------------------------------------
    def carbon_fraction_row(self, zone: str | None = None, forest_type: str | None = None) -> pd.Series:
        """The table row giving the carbon fraction for a zone/domain and forest type."""
        cf = self.table[self.table["factor"] == CARBON_FRACTION]
        if zone is None:
            default = cf[(cf["forest_type"] == "*")]
            default = default[np.isclose(default["value"], IPCC_DEFAULT_CARBON_FRACTION)]
            if default.empty:
                raise SawaValueError(f"carbon factor table {self.source}: no default carbon fraction row")
            return default.iloc[0]
        domain = self.domain_of(zone)
        rows = cf[cf["domain"] == domain]
        if forest_type is not None:
            ft = _normalise(forest_type)
            if ft not in FOREST_TYPE_CF_GROUP:
                raise SawaValueError(
                    f"unknown forest type {forest_type!r}; known: {sorted(FOREST_TYPE_CF_GROUP)}"
                )
            group = rows[rows["forest_type"] == FOREST_TYPE_CF_GROUP[ft]]
            if not group.empty:
                return group.iloc[0]
        generic = rows[rows["forest_type"] == "*"]
        if generic.empty:
            raise SawaValueError(
                f"carbon factor table {self.source}: no carbon fraction for climate domain {domain!r} "
                f"(zone {zone!r}); IPCC Table 4.3 covers tropical, subtropical, temperate and boreal forests"
            )
        return generic.iloc[0]

    def carbon_fraction(self, zone: str | None = None, forest_type: str | None = None) -> float:
        """Carbon fraction (t C / t d.m.) for a zone or domain (default: IPCC 0.47)."""
        return float(self.carbon_fraction_row(zone, forest_type)["value"])

    def root_shoot_rows(self, zone: str, forest_type: str | None = None, continent: str | None = None,
                        origin: str | None = None) -> pd.DataFrame:
        """The AGB-class rows of the root-to-shoot ratio for a zone (and forest type, continent, origin).

        Continent and origin select the most specific rows the table has for the zone: those of
        the given continent if any, else the continent-independent ("*") ones; then the same for
        origin (see the module docstring).
        """
        cont = canonical_continent(continent) if continent is not None else None
        orig = canonical_origin(origin) if origin is not None else None
        z = self.canonical_zone(zone)
        if z in DOMAINS:
            raise SawaValueError(
                f"root-to-shoot ratios depend on the ecological zone, not only the domain: give a zone "
                f"instead of {zone!r} (known zones: {', '.join(self.zone_names)})"
            )
        rs = self.table[(self.table["factor"] == ROOT_SHOOT_RATIO) & (self.table["zone"] == z)]
        if rs.empty:
            raise SawaValueError(
                f"the factor table ({self.source}) gives no root-to-shoot ratio for zone {z!r} "
                "(IPCC 2006 Table 4.4 has no estimate there); pass include_bgb=False or another zone"
            )
        rs = self._most_specific(rs, z, cont, orig)
        types = sorted(set(rs["forest_type"]) - {"*"})
        if types:
            if forest_type is None:
                raise SawaValueError(
                    f"zone {z!r}: root-to-shoot ratios depend on the forest type; give forest_type= one of {types}"
                )
            ft = _normalise(forest_type)
            sel = rs[rs["forest_type"] == ft]
            if sel.empty:
                raise SawaValueError(f"zone {z!r}: no root-to-shoot ratio for forest type {forest_type!r}; known: {types}")
            rs = sel
        return rs.sort_values("agb_min_mg_ha", na_position="first")

    def _most_specific(self, rs: pd.DataFrame, z: str, continent: str | None, origin: str | None) -> pd.DataFrame:
        """Rows of the most specific (continent, origin) the zone's rows ``rs`` have; "*" = any."""
        scope = ""
        for col, value, what in (("continent", continent, "continent"), ("origin", origin, "forest origin")):
            have = sorted(set(rs[col]) - {"*"})
            if value is not None and value in have:
                rs = rs[rs[col] == value]
                scope = f" (continent {value!r})" if col == "continent" else scope
                continue
            generic = rs[rs[col] == "*"]
            if generic.empty:
                if value is None:
                    raise SawaValueError(
                        f"zone {z!r}{scope}: the factor table ({self.source}) gives root-to-shoot ratios by "
                        f"{what} only, for {', '.join(have)}; give {col}= one of them"
                    )
                raise SawaValueError(
                    f"zone {z!r}{scope}: the factor table ({self.source}) has no root-to-shoot ratio for {what} "
                    f"{value!r} and no {what}-independent ('*') rows; it has {', '.join(have)}"
                )
            rs = generic
        return rs

    def root_shoot_ratio(self, agb_mg_ha, zone: str, forest_type: str | None = None, continent: str | None = None,
                         origin: str | None = None) -> np.ndarray:
        """R for each AGB value (Mg/ha) of one zone (and continent/origin); NaN AGB gives NaN."""
        agb = np.asarray(agb_mg_ha, dtype=np.float64)
        rows = self.root_shoot_rows(zone, forest_type, continent, origin)
        out = np.full(agb.shape, np.nan)
        assigned = np.zeros(agb.shape, dtype=bool)
        for _, row in rows.iterrows():
            lo = -np.inf if np.isnan(row["agb_min_mg_ha"]) else row["agb_min_mg_ha"]
            hi = np.inf if np.isnan(row["agb_max_mg_ha"]) else row["agb_max_mg_ha"]
            sel = (agb > lo) & (agb <= hi) if np.isfinite(lo) else (agb <= hi)
            out[sel] = row["value"]
            assigned |= sel
        uncovered = np.isfinite(agb) & ~assigned
        if uncovered.any():
            vals = agb[uncovered]
            ranges = [_class_label(r.agb_min_mg_ha, r.agb_max_mg_ha) for r in rows.itertuples()]
            extra = "".join(f" {k} {v!r}" for k, v in (("continent", continent), ("origin", origin)) if v is not None)
            raise SawaValueError(
                f"zone {zone!r} forest type {forest_type!r}{extra}: {int(uncovered.sum())} AGB value(s) "
                f"(e.g. {vals[0]:g} Mg/ha, range {vals.min():g}..{vals.max():g}) fall outside the "
                f"IPCC AGB classes {ranges} of the root-to-shoot table"
            )
        return out


def _class_label(lo: float, hi: float) -> str:
    """'(lo, hi]' label of an AGB class (Mg/ha); open bounds shown as -inf/inf."""
    lo_s = "-inf" if np.isnan(lo) else f"{lo:g}"
    hi_s = "inf" if np.isnan(hi) else f"{hi:g}"
    return f"({lo_s}, {hi_s}]"


_DEFAULT_FACTORS: CarbonFactors | None = None


def default_factors() -> CarbonFactors:
    """The shipped factor table (loaded once)."""
    global _DEFAULT_FACTORS
    if _DEFAULT_FACTORS is None:
        _DEFAULT_FACTORS = CarbonFactors.load()
    return _DEFAULT_FACTORS


def _check_agb(agb: np.ndarray, what: str) -> None:
    finite = np.isfinite(agb)
    if np.any(agb[finite] < 0):
        idx = np.flatnonzero((agb < 0) & finite)[0]
        raise SawaValueError(f"{what} must be >= 0 Mg/ha; element {idx} is {agb.ravel()[idx]:g}")
    if np.isinf(agb).any():
        raise SawaValueError(f"{what} contains infinite values")


def agb_to_carbon(
    agb_mg_ha,
    zone: str | np.ndarray | None = None,
    *,
    forest_type: str | None = None,
    include_bgb: bool = True,
    agb_se_mg_ha=None,
    factors: CarbonFactors | None = None,
    continent: str | None = None,
    origin: str | None = None,
) -> CarbonResult:
    """Carbon densities (Mg C/ha) from AGB densities (Mg/ha), vectorised.

    ``zone``: one GEZ zone name (or climate domain, for carbon fraction only) for all values, an
    integer array of GEZ codes with the shape of ``agb_mg_ha``, or None (IPCC default carbon
    fraction 0.47; below-ground biomass then needs ``include_bgb=False``).
    ``forest_type``: conifer / quercus / eucalyptus / other broadleaf (temperate zones need it;
    it also selects the temperate/boreal broadleaf 0.48 or conifer 0.51 carbon fraction).
    ``continent`` (africa, americas, asia, europe, oceania; Natural Earth "North/South America"
    accepted) and ``origin`` (natural, planted) select root-to-shoot rows of a table that has
    them (IPCC 2019 Refinement style); with the shipped IPCC 2006 table they change nothing.
    ``agb_se_mg_ha``: standard errors, propagated linearly (see module docstring).
    Returns a :class:`CarbonResult` (``result["agc"]``, ``["bgc"]``, ``["total_c"]``, ...);
    ``bgc`` is zero when ``include_bgb`` is False. NaN AGB gives NaN outputs.
    """
    factors = factors or default_factors()
    if continent is not None:
        continent = canonical_continent(continent)
    if origin is not None:
        origin = canonical_origin(origin)
    agb = np.asarray(agb_mg_ha, dtype=np.float64)
    _check_agb(agb, "agb_mg_ha")
    se = None
    if agb_se_mg_ha is not None:
        se = np.broadcast_to(np.asarray(agb_se_mg_ha, dtype=np.float64), agb.shape)
        finite = np.isfinite(se)
        if np.any(se[finite] < 0):
            raise SawaValueError("agb_se_mg_ha must be >= 0")
    cf = np.full(agb.shape, np.nan)
    ratio = np.zeros(agb.shape) if not include_bgb else np.full(agb.shape, np.nan)

    if zone is None:
        if include_bgb:
            raise SawaValueError(
                "below-ground biomass needs an ecological zone (root-to-shoot ratios depend on it): "
                "pass zone= (a GEZ zone name or code array) or include_bgb=False"
            )
        cf[...] = factors.carbon_fraction(None)
    elif isinstance(zone, str):
        cf[...] = factors.carbon_fraction(zone, forest_type)
        if include_bgb:
            ratio = factors.root_shoot_ratio(agb, zone, forest_type, continent, origin)
    else:
        codes = np.asarray(zone)
        if codes.shape != agb.shape:
            raise SawaValueError(f"zone code array shape {codes.shape} differs from AGB shape {agb.shape}")
        if not np.issubdtype(codes.dtype, np.integer):
            finite_codes = codes[np.isfinite(codes)]
            if not np.all(finite_codes == np.round(finite_codes)):
                raise SawaValueError("zone code array must hold integer GEZ codes")
        valid = np.isfinite(agb)
        used = np.unique(codes[valid]) if valid.any() else np.array([], dtype=int)
        for code in used:
            z = factors.zone_of_code(int(code))
            sel = (codes == code) & valid
            cf[sel] = factors.carbon_fraction(z, forest_type)
            if include_bgb:
                ratio[sel] = factors.root_shoot_ratio(agb[sel], z, forest_type, continent, origin)
    cf = np.where(np.isfinite(agb), cf, np.nan)
    agc = agb * cf
    bgc = agc * ratio
    total = agc + bgc
    out = dict(agc=agc, bgc=bgc, total_c=total, carbon_fraction=cf, root_shoot_ratio=ratio)
    if se is not None:
        out.update(agc_se=se * cf, bgc_se=se * cf * ratio, total_c_se=se * cf * (1.0 + ratio))
    return CarbonResult(**out)


__all__ = [
    "CARBON_FACTORS_PATH",
    "CONTINENTS",
    "ORIGINS",
    "ECOLOGICAL_ZONES_PATH",
    "CarbonFactors",
    "CarbonResult",
    "agb_to_carbon",
    "canonical_continent",
    "canonical_origin",
    "default_factors",
]
