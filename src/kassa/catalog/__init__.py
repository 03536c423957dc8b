"""Products and their variants (SKUs)."""
