"""HTTP API: events, alerts, health and metrics."""
