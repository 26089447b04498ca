"""Snapshot import (issue 18): a nightly case-system extract (CSV, one row a nominal) compared
with the stored state; what changed becomes the events a person would have sent, through the
events API's validation and the ingest pipeline. See docs/feeds/snapshot.md."""
