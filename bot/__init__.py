"""Slack app: slash commands and the Acknowledge button (slack-bolt, async)."""
