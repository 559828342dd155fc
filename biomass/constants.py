"""Constants of the biomass package, each with its unit and source.

Sources
-------
[L4A-ATBD] Kellner, J.R., Armston, J., Duncanson, L. (2023) Algorithm Theoretical Basis Document for
           GEDI Footprint Aboveground Biomass Density. Earth and Space Science 10, e2022EA002516.
[L4A-V2]   GEDI L4A Footprint Level Aboveground Biomass Density, Version 2.1, ORNL DAAC
           (doi:10.3334/ORNLDAAC/2056): granule attributes ``/BEAMxxxx/agbd_prediction``
           (``predictor_offset`` = 100, ``response_offset`` = 0, ``alpha`` = 0.1) and the
           ``ANCILLARY/model_data`` table.
[Duncanson2022] Duncanson, L. et al. (2022) Aboveground biomass density models for NASA's Global
           Ecosystem Dynamics Investigation (GEDI) lidar mission. Remote Sens. Environ. 270, 112845.
[Snowdon1991] Snowdon, P. (1991) A ratio estimator for bias correction in logarithmic regressions.
           Can. J. For. Res. 21, 720-724.
[Baskerville1972] Baskerville, G.L. (1972) Use of logarithmic regression in the estimation of plant
           biomass. Can. J. For. Res. 2, 49-53.
[Duan1983] Duan, N. (1983) Smearing estimate: a nonparametric retransformation method.
           J. Am. Stat. Assoc. 78, 605-610.
[Roberts2017] Roberts, D.R. et al. (2017) Cross-validation strategies for data with temporal, spatial,
           hierarchical, or phylogenetic structure. Ecography 40, 913-929 (spatial block CV).
"""

from __future__ import annotations

#: Offset (m) added to every RH predictor before its transform: x = sqrt(RH_m + 100) [L4A-V2,
#: attribute ``predictor_offset``; checked on the real granule: xvar**2 - 100 = L2A RH in metres].
L4A_PREDICTOR_OFFSET_M = 100.0

#: Offset (Mg/ha) added to AGBD before its transform [L4A-V2, attribute ``response_offset``].
L4A_RESPONSE_OFFSET_MG_HA = 0.0

#: Two-sided level of the L4A prediction interval (0.1 -> 90 % interval) [L4A-V2, attribute ``alpha``].
L4A_ALPHA = 0.1

#: Fill value of GEDI L4A floating-point fields ("no value") [L4A-V2 data dictionary].
GEDI_FLOAT_FILL = -9999.0

#: Values at or below this (in a predictor, metres) are GEDI fill values, not heights.
FILL_THRESHOLD_M = -999.0

#: Flag value written where a limit was not evaluated (no prediction), as in the L4A granules [L4A-V2].
LIMIT_FLAG_NOT_EVALUATED = 255

#: A RH column whose median exceeds this (m) is taken to be in centimetres and refused: the tallest
#: trees are ~100 m, and L2A ``rh_aN`` datasets are stored in cm.
RH_MEDIAN_MAX_PLAUSIBLE_M = 100.0

#: Stratum name used when a model is fitted without strata (one model for all shots).
ALL_STRATA = "all"

#: Default minimum number of calibration shots per stratum for an OLS fit (in addition to the
#: requirement of at least one residual degree of freedom).
MIN_SHOTS_PER_STRATUM = 10

#: Width (degrees) of the terrain-slope bins of the cross-validation report.
SLOPE_BIN_WIDTH_DEG = 5.0

#: Default spatial CV block edge (km). A 5 km block spans ~80 consecutive shots of a track (60 m
#: spacing) and several of the 600 m apart tracks, so that neighbouring (correlated) shots are held
#: out together; choose blocks larger than the residual autocorrelation range [Roberts2017].
DEFAULT_BLOCK_KM = 5.0

#: Default number of cross-validation folds.
DEFAULT_N_SPLITS = 5

#: Model file format name and version (JSON envelope for L4A-form models and the packaged table).
MODEL_FILE_FORMAT = "sawa-biomass-model"
MODEL_TABLE_FORMAT = "sawa-l4a-model-table"
MODEL_FILE_VERSION = 1

#: Name of the NASA model shipped with the package (``sawa predict --model gedi-l4a``).
GEDI_L4A_MODEL_NAME = "gedi-l4a"

__all__ = [
    "L4A_PREDICTOR_OFFSET_M",
    "L4A_RESPONSE_OFFSET_MG_HA",
    "L4A_ALPHA",
    "GEDI_FLOAT_FILL",
    "FILL_THRESHOLD_M",
    "LIMIT_FLAG_NOT_EVALUATED",
    "RH_MEDIAN_MAX_PLAUSIBLE_M",
    "ALL_STRATA",
    "MIN_SHOTS_PER_STRATUM",
    "SLOPE_BIN_WIDTH_DEG",
    "DEFAULT_BLOCK_KM",
    "DEFAULT_N_SPLITS",
    "MODEL_FILE_FORMAT",
    "MODEL_TABLE_FORMAT",
    "MODEL_FILE_VERSION",
    "GEDI_L4A_MODEL_NAME",
]
