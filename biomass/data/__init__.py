"""Data shipped with the biomass package (NASA GEDI L4A v2 model table, see gedi_l4a_model_data.json provenance)."""
