"""Offline checks of deploy/: rendering, schema validation, image tree."""
