"""``make bench``: the disk engine against the tools users would otherwise run."""
