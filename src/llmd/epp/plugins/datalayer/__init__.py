"""Data layer plugins: where metrics are scraped (sources) and how they are read (extractors)."""
