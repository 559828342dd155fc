"""sawa biomass package."""
