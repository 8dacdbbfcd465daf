"""Scorers: 0..1 per candidate; the framework clamps, weights and sums."""
