"""Helpers both the unit and the integration tests may use."""
