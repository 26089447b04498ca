"""HMPPS probation domain events in (issue 18): docs/feeds/probation.md."""
