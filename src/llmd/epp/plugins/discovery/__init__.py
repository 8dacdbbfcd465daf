"""Endpoint discovery plugins (`dataLayer.discovery.endpoints`)."""
