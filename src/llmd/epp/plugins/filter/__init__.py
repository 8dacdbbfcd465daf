"""Filters: narrow the candidate endpoints."""
