"""The daemon: the thin Twisted layer around the answer step.

`server` (protocol and factory), `service` (listeners, reload, shutdown),
`systemd` (sd_notify and inherited sockets), `logs` (structlog setup). The
only package besides `commands` that imports Twisted.
"""
