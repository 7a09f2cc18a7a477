"""Loopback ports for the daemons and Postfix services a test starts.

Unit tests use no sockets, so this lives with the integration helpers.
"""

from __future__ import annotations

import socket


def free_port(family: int = socket.AF_INET) -> int:
    """A loopback port nobody listens on now (the kernel picks it)."""
    host = "::1" if family == socket.AF_INET6 else "127.0.0.1"
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])
