"""Delivery: the outbox worker, retries, backoff and pacing; the notifier interface."""
