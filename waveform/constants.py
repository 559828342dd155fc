"""GEDI instrument and product constants, each with its unit and source.

Sources
-------
[L1B-UG]  GEDI L1B Product User Guide, LP DAAC (2020/2021).
[L1B-ATBD] Hofton, M. & Blair, J.B. (2019) GEDI Transmit and Receive Waveform Processing for L1 and
          L2 Products, ATBD v1.0.
[L2A-DD]  GEDI L2A data dictionary (fill values).
[Dubayah2020] Dubayah, R. et al. (2020) The Global Ecosystem Dynamics Investigation: High-resolution laser
          ranging of the Earth's forests and topography. Science of Remote Sensing 1, 100002.
"""

from __future__ import annotations

#: Speed of light in vacuum (m/s), CODATA exact.
SPEED_OF_LIGHT_M_S = 299_792_458.0

#: Receive digitiser sample interval (s): 1 ns [L1B-UG].
SAMPLE_INTERVAL_S = 1.0e-9

#: One-way range per sample (m): c * 1 ns / 2 = 0.1499 m [L1B-UG].
SAMPLE_RANGE_M = SPEED_OF_LIGHT_M_S * SAMPLE_INTERVAL_S / 2.0

#: Nominal footprint diameter (m) at the 1/e^2 energy level [Dubayah2020: "~25 m"].
FOOTPRINT_DIAMETER_M = 25.0

#: Transmit pulse full width at half maximum (s): ~15.6 ns [Dubayah2020, Table 1].
TX_PULSE_FWHM_S = 15.6e-9

#: The eight beam groups of a GEDI granule; BEAM0000-BEAM0011 are coverage beams
#: (split from one laser), BEAM0101-BEAM1011 full-power beams [L1B-UG].
BEAM_NAMES = (
    "BEAM0000", "BEAM0001", "BEAM0010", "BEAM0011",
    "BEAM0101", "BEAM0110", "BEAM1000", "BEAM1011",
)
COVERAGE_BEAMS = frozenset(BEAM_NAMES[:4])
FULL_POWER_BEAMS = frozenset(BEAM_NAMES[4:])

#: Fill values that mean "no value" in GEDI products [L2A-DD]; compared with a relative tolerance
#: for float32 storage. 3.4028235e38 is float32 max, used as fill in L1B/L2A float fields.
FILL_VALUES = (-9999.0, -999999.0, 3.4028234663852886e38)
