"""Home of the state that rules keep between requests: counters and greylist entries.

Empty until stateful rules land; see docs/architecture.md for where a
backend goes and how facts reach the answer step.
"""
