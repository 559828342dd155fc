"""sawa terrain package."""
