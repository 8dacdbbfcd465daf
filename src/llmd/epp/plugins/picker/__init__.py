"""Pickers: choose the target endpoints from the weighted scores."""
