"""Ingest: validating, storing and applying events."""
