"""sawa fusion package."""
