"""Kassa: a self-hostable checkout service that never oversells."""

__version__ = "0.1.0"
