"""Constants of the carbon accounting, areas, zonal totals and references modules (fusion).

Each constant carries its unit and its source. Factor tables (carbon fractions, root-to-shoot
ratios, official totals) are not here: they live in ``fusion/data/*.csv`` with one citation per
row, loaded by :mod:`fusion.carbon` and :mod:`fusion.references`.
"""

from __future__ import annotations

from pathlib import Path

#: Folder of the shipped, cited reference tables.
DATA_DIR = Path(__file__).resolve().parent / "data"

# --- units ------------------------------------------------------------------------------------
#: Square metres per hectare.
M2_PER_HA = 1.0e4
#: Megagrams (tonnes) per petagram: 1 Pg = 1e15 g = 1e9 Mg.
MG_PER_PG = 1.0e9
#: Kilotonnes (thousand tonnes) per petagram: 1 Pg = 1e9 t = 1e6 kt.
KT_PER_PG = 1.0e6

# --- carbon -----------------------------------------------------------------------------------
#: Default carbon fraction of dry above-ground forest biomass (t C / t d.m.): IPCC 2006
#: Guidelines, Vol. 4 (AFOLU), Ch. 4, Table 4.3 ("all" / default, both climate domains); the
#: 2019 Refinement kept Table 4.3 unchanged ("Improving wood carbon fractions for multiscale
#: forest carbon estimation", Carbon Balance and Management, 2024, doi:10.1186/s13021-024-00272-2:
#: "the IPCC did not update its recommended wood CFs in its most recent refinement"). The
#: per-domain rows are in ``data/carbon_factors.csv``.
IPCC_DEFAULT_CARBON_FRACTION = 0.47
#: Carbon fraction assumed when turning FAO FRA 2020 biomass carbon back into dry biomass. FRA
#: countries report carbon stocks; where they lack national factors the FRA 2020 reporting
#: guidelines point to the IPCC 2006 default (0.47). Countries with national factors may have used
#: others, so biomass derived from FRA carbon with this factor is approximate (stated in reports).
FAO_FRA_CARBON_FRACTION = 0.47

# --- GEDI -------------------------------------------------------------------------------------
#: Latitude limit of GEDI coverage (degrees): ISS orbit inclination; GEDI L4B grids cover
#: 51.6 S to 51.6 N (Dubayah et al. 2022, GEDI L4B Gridded AGBD V2, ORNL DAAC,
#: doi:10.3334/ORNLDAAC/2017).
GEDI_LATITUDE_LIMIT_DEG = 51.6
#: CRS of GEDI L4B grids: EASE-Grid 2.0 global, 1 km (1000.895 m) cells.
GEDI_L4B_CRS = "EPSG:6933"
#: Nodata value of GEDI L4B GeoTIFF bands (MU, SE, ...), per the L4B user guide.
GEDI_L4B_NODATA = -9999.0

# --- polygons ---------------------------------------------------------------------------------
#: Natural Earth admin-0 columns tried in order for an ISO 3166-1 alpha-3 code: ``ISO_A3`` is
#: "-99" for France, Norway, N. Cyprus, Somaliland and Kosovo; ``ISO_A3_EH`` fixes France;
#: ``ADM0_A3`` is always set (NOR, and the non-ISO CYN, SOL, KOS).
NATURAL_EARTH_ISO3_COLUMNS = ("ISO_A3", "ISO_A3_EH", "ADM0_A3")
#: Natural Earth's "no code" value.
NATURAL_EARTH_MISSING_CODE = "-99"
#: Natural Earth admin-0 codes that are not ISO 3166-1 codes (``ADM0_A3`` fallbacks).
NATURAL_EARTH_NON_ISO_CODES = frozenset({"CYN", "SOL", "KOS", "SAH", "PSX", "SDS"})
#: Longest polygon edge (degrees) before geodesic areas are computed: edges of geographic polygons
#: are straight in longitude/latitude (as exactextract rasterises them) while pyproj's geodesic
#: area joins vertices by geodesics; segmentizing to 0.05 deg makes the two agree to < 1 m of
#: edge offset (sagitta ~ w^2 tan(lat) / 8R).
DENSIFY_DEG = 0.05
#: The same for projected polygons (metres).
DENSIFY_M = 5000.0

# --- memory -----------------------------------------------------------------------------------
#: Raster cells exactextract may hold at once per source (bounded memory on large rasters).
MAX_CELLS_IN_MEMORY = 1_000_000
