"""Fictional demo data."""
