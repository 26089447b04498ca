"""Adapters to the outside: Slack and SMTP notifiers, inbound feeds."""
