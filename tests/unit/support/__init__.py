"""Helpers the unit tests share, so that no test file imports another."""
