"""The daemon: the thin Twisted layer around the answer step.

`server` (protocol and factory), `service` (listeners, reload, shutdown),
`facts` (the fact source: providers under the deadline), `access` (who may
connect), `systemd` (sd_notify and inherited sockets), `logs` and
`log_output` (structlog setup, the non-blocking output). Twisted is imported
here, in `commands` and by the recorder (its writer child), nowhere else.
"""
