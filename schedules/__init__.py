"""Periodic jobs run by APScheduler inside casewatch serve."""
