"""Sterna's disk data engine: sources, targets, the copier and format conversion."""
