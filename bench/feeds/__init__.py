"""Throughput of the real feeds (issue 18): `python -m bench.feeds [--only snapshot,mail,probation]`."""
