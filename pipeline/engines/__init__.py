"""Engines that carry out a run: the lifecycle written once, run locally, on Ray, or as batch files."""
