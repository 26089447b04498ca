"""Alerts: opening, acknowledging and resolving, one live alert per key."""
