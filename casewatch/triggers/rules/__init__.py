"""The alert rules: pure functions of a case-state snapshot, a time and the trigger settings."""
