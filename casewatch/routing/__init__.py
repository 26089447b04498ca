"""Routing: which receivers an alert change goes to; escalation chains."""
