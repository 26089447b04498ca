"""Alerts: opening, acknowledging and resolving, one live alert per key."""

# The visor_ref of alerts about the service itself (system.*), not about a nominal.
SYSTEM_REF = "SYSTEM"
