"""The core model: pure definitions (event types, alert kinds, severities, states, the facts the
rules see, name folding). Imports nothing else of casewatch and no I/O library; import the
submodules themselves (nothing is re-exported here)."""
