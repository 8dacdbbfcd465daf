"""Data producers: per-request data computed once before filtering, read by scorers."""
