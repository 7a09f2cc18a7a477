"""The answers postgate sends: actions valid by construction, named replies, code facts.

Imports only the wire codec; no Twisted, no rules.
"""
