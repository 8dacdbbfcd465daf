"""Saturation detectors: when is the pool too busy for sheddable requests."""
