"""Plugins of `dataLayer.crossReplica` and `dataLayer.peerDiscovery` (EPP replicas)."""
