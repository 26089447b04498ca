"""Triggers: the alert rules, pure functions of case state and a clock."""
