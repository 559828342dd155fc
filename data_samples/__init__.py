"""sawa data_samples package."""
