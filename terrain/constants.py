"""Terrain constants, each with its unit and source.

Sources
-------
[WGS84]     NIMA TR8350.2 (2000) Department of Defense World Geodetic System 1984, 3rd ed.:
            a = 6 378 137 m, 1/f = 298.257 223 563.
[Horn1981]  Horn, B.K.P. (1981) Hill shading and the reflectance map. Proc. IEEE 69(1), 14-47
            (the 3x3 weighted finite difference used by GDAL ``gdaldem slope``).
[Farr2007]  Farr, T.G. et al. (2007) The Shuttle Radar Topography Mission. Rev. Geophys. 45, RG2004
            (SRTM heights are orthometric, referenced to the EGM96 geoid).
[CopDEM]    Airbus / ESA (2022) Copernicus DEM Product Handbook v5.0, section 2.2: vertical reference
            EGM2008 (GLO-30/GLO-90; DTED tag ``VerticalDatum = E08``).
[TDX-DEM]   Wessel, B. (2018) TanDEM-X Ground Segment DEM Products Specification Document, DLR
            TD-GS-PS-0021 v3.2: heights are ellipsoidal, WGS84-G1150.
[GEDI-L2A]  GEDI L2A User Guide: ``elev_lowestmode`` is height above the WGS84 ellipsoid; the
            ``digital_elevation_model`` field is TanDEM-X 90 m (ellipsoidal).
[Lefsky2005] Lefsky, M.A. et al. (2005) Estimates of forest canopy height and aboveground biomass
            using ICESat. Geophys. Res. Lett. 32, L22S02 (terrain index = elevation range of the DEM
            in a window around the footprint, here max - min within the footprint window).
[Wang2019]  Wang, Y., Ni, W., Sun, G. et al. (2019) Slope-adaptive waveform metrics of large footprint
            lidar for estimation of forest aboveground biomass. Remote Sens. Environ. 224, 386-400,
            doi:10.1016/j.rse.2019.02.017.
"""

from __future__ import annotations

# --------------------------------------------------------------------------- ellipsoid
#: WGS84 semi-major axis (m) [WGS84].
WGS84_A_M = 6_378_137.0
#: WGS84 inverse flattening [WGS84].
WGS84_INV_F = 298.257223563

# --------------------------------------------------------------------------- slope
#: Horn (1981) 3x3 weights: centre row/column 2, corners 1; gradient = weighted difference / (8 * spacing).
HORN_WEIGHT_SUM = 8.0
#: Default block edge (pixels) of blocked raster processing (bounded memory: ~8 MB per float64 block).
DEFAULT_BLOCK_PX = 1024
#: Halo (pixels) needed by a 3x3 stencil.
HORN_HALO_PX = 1
#: Slope (deg) under which a surface counts as flat and its aspect is undefined (NaN).
FLAT_SLOPE_DEG = 1e-6
#: A DEM whose median slope exceeds this (deg) has implausible pixel spacing or units.
IMPLAUSIBLE_MEDIAN_SLOPE_DEG = 75.0
#: Elevations outside this range (m) mean wrong units or a broken file (Dead Sea -430 m, Everest 8849 m,
#: plus geoid/ellipsoid differences of up to ~110 m).
PLAUSIBLE_ELEVATION_RANGE_M = (-600.0, 9_000.0)
#: A projected pixel smaller than this (m) is treated as a unit error (e.g. degrees in a metre CRS).
MIN_PLAUSIBLE_PIXEL_M = 0.01
#: A geographic pixel larger than this (deg) is implausible for slope work (metres read as degrees).
MAX_PLAUSIBLE_PIXEL_DEG = 1.0

# --------------------------------------------------------------------------- vertical datums
ELLIPSOID = "WGS84_ellipsoid"
EGM96 = "EGM96"
EGM2008 = "EGM2008"
UNKNOWN_DATUM = "unknown"
#: Datums whose heights are orthometric (above a geoid): comparing them with GEDI's ellipsoidal heights
#: needs the geoid undulation N (h = H + N), which varies by -106..+85 m worldwide.
GEOID_DATUMS = (EGM96, EGM2008)
#: EPSG codes of the vertical CRSs of the geoid datums (EGM96 height, EGM2008 height) and of the
#: 3-D WGS84 geographic CRS (ellipsoidal heights), used by pyproj for h = H + N.
VERTICAL_EPSG = {EGM96: 5773, EGM2008: 3855}
WGS84_3D_EPSG = 4979
#: File-name hints -> vertical datum (lower-case substrings), checked in order. Sources: SRTM/NASADEM/
#: ASTER/ALOS are EGM96 [Farr2007; product guides]; Copernicus DEM and FABDEM EGM2008 [CopDEM];
#: TanDEM-X DEM ellipsoidal [TDX-DEM].
NAME_HINTS: tuple[tuple[str, str], ...] = (
    ("copernicus", EGM2008),
    ("cop30", EGM2008),
    ("cop90", EGM2008),
    ("fabdem", EGM2008),
    ("tdm1_dem", ELLIPSOID),
    ("tdm_dem", ELLIPSOID),
    ("tandem", ELLIPSOID),
    ("tdx", ELLIPSOID),
    ("nasadem", EGM96),
    ("srtm", EGM96),
    (".hgt", EGM96),
    ("astgtm", EGM96),
    ("aw3d30", EGM96),
)
#: DTED ``VerticalDatum`` tag values (GDAL ``DTED_VerticalDatum``) -> datum [CopDEM].
DTED_VERTICAL_DATUMS = {"E08": EGM2008, "E96": EGM96, "MSL": EGM96}
#: A median |DEM - GEDI ground| above this (m) with a tight spread suggests a datum mismatch.
DATUM_OFFSET_WARN_M = 5.0

# --------------------------------------------------------------------------- vertical units -> metres
Z_UNITS_TO_M = {
    "m": 1.0, "metre": 1.0, "meter": 1.0, "metres": 1.0, "meters": 1.0,
    "cm": 0.01, "centimetre": 0.01, "centimeter": 0.01,
    "dm": 0.1, "decimetre": 0.1, "decimeter": 0.1,
    "mm": 0.001,
    "ft": 0.3048, "foot": 0.3048, "feet": 0.3048,
    "us-ft": 1200.0 / 3937.0, "us_survey_foot": 1200.0 / 3937.0, "us survey foot": 1200.0 / 3937.0,
}

# --------------------------------------------------------------------------- footprints
#: Per-shot terrain reasons (``reason`` column of :func:`terrain.footprint.footprint_terrain`).
TERRAIN_REASONS = {
    "ok": "slope, aspect and relief computed",
    "no_coordinates": "longitude/latitude missing or not finite",
    "outside_dem": "the footprint centre is outside the DEM",
    "nodata": "the DEM is nodata at the footprint centre or in its whole window",
    "too_few_pixels": "fewer than 3 valid, non-collinear DEM pixels in the footprint window",
    "dem_edge": "the footprint window is cut by the DEM edge; fewer than 3 usable pixels",
}
#: Smallest number of valid pixels for a plane fit.
MIN_PLANE_PIXELS = 3
#: DEM block edge (pixels) used to group shots for windowed reads.
FOOTPRINT_BLOCK_PX = 512

# --------------------------------------------------------------------------- SAWA
#: Percentiles (%) of the SAWA metrics: the quartiles and 10, 20, ..., 90, 95, 98 [task; Wang2019 used
#: quartiles].
SAWA_PERCENTILES = (10, 20, 25, 30, 40, 50, 60, 70, 75, 80, 90, 95, 98)
#: Steepest slope (deg) at which SAWA and the terrain deconvolution are applied; steeper shots get the
#: reason ``slope_too_steep``. At 70 deg the ground under a 25 m footprint spans 25 tan(70) = 69 m of
#: height, more than the tallest canopies: the waveform is terrain, not forest (the published method was
#: tested to 40 deg [Wang2019], sawa's study to 50 deg). It also bounds the bare-ground model length,
#: which grows with tan(slope) (~3 MB per shot near 90 deg).
MAX_CORRECTION_SLOPE_DEG = 70.0

# --------------------------------------------------------------------------- terrain deconvolution (sawa's improvement)
#: Richardson-Lucy iterations per (terrain sigma / pulse sigma)^2: the residual blur of RL on a Gaussian shrinks
#: roughly like sigma_t^2 / iterations, so this keeps it a fixed fraction of the pulse width. Tuned on 300 stands
#: on 20-50 deg slopes (RH50 error vs the flat twin): plain RL x40: RMSE 2.74 m, 11.2 s; accelerated RL
#: [Biggs1997] x10: RMSE 1.20 m, 3.7 s; x6: 1.30 m, 2.2 s.
RL_ITERATIONS_PER_RATIO2 = 10.0
RL_MIN_ITERATIONS = 20
RL_MAX_ITERATIONS = 3000
#: Terrain sigma (samples) under which a waveform is left as it is (slope below ~0.7 deg for GEDI).
RL_MIN_TERRAIN_SIGMA_SAMPLES = 0.5
#: Deconvolution window: from the signal start minus RL_MARGIN_SIGMAS terrain sigmas (+ 20 samples) down to the
#: signal end plus max(RL_MARGIN_BELOW_M + RL_MARGIN_SIGMAS terrain sigmas, half the waveform extent): a ground
#: return spread below the back threshold under a dense canopy can lie well below the signal end.
RL_MARGIN_SIGMAS = 6.0
RL_MARGIN_BELOW_M = 10.0

# --------------------------------------------------------------------------- slope study
#: Slope bins (deg): lower edges 0, 5, ..., 45; the last bin includes 50.
STUDY_SLOPE_EDGES_DEG = (0.0, 5.0, 10.0, 15.0, 20.0, 25.0, 30.0, 35.0, 40.0, 45.0, 50.0)
STUDY_STANDS_PER_BIN = 200
STUDY_CANOPY_HEIGHT_RANGE_M = (5.0, 50.0)
STUDY_COVERS = (0.3, 0.5, 0.7, 0.85, 0.95)
STUDY_CROWN_SHAPES = ("ellipsoid", "cone", "cylinder")
STUDY_METRICS = (25, 50, 75, 98)
#: Bins from this slope (deg) on are judged against the goals below.
STUDY_STEEP_FROM_DEG = 20.0
#: Goals: on steep bins the correction cuts |bias| by >= 70 % and RMSE by >= 50 % against the raw metrics;
#: on the flat bin it adds no more than 0.2 m.
GOAL_BIAS_REDUCTION = 0.70
GOAL_RMSE_REDUCTION = 0.50
GOAL_FLAT_ADDED_M = 0.2
#: AGB of a simulated stand: the sample world's stated allometry AGB = 2.0 H^1.5 cover (Mg/ha, H in m)
#: (data_samples.generate.ALLOMETRY), so study and sample world agree.
STUDY_ALLOMETRY = (2.0, 1.5, 1.0)
