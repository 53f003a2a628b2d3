"""Benchmarks: each prints its figures as ratios against a named baseline measured in the same
run. ``python -m bench`` runs them all (``make bench``)."""
