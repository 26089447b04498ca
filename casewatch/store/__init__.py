"""The case store: models, engines, migrations."""
