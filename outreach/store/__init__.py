"""Persistence: models, engines and migrations."""
