"""casewatch: watches ViSOR case data for triggers and routes alerts to the people who must act."""

__version__ = "0.1.0"
