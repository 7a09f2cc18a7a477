"""The client side of the control socket (`postgate.daemon.control`): one request, one reply.

Blocking and bounded: a command-line tool has nothing else to do meanwhile,
and a daemon that does not answer within the timeout is reported, not waited for.
"""

from __future__ import annotations

import socket
import time
from typing import TYPE_CHECKING, Any, Final

import orjson

if TYPE_CHECKING:
    from pathlib import Path

TIMEOUT: Final = 10.0
MAX_REPLY: Final = 16 << 20


class ControlError(Exception):
    """The daemon could not be asked, or refused the command; the text says which."""


def request(
    path: Path, command: str, args: dict[str, Any] | None = None, timeout: float = TIMEOUT
) -> Any:
    """The command's result from the daemon listening on ``path``; raises `ControlError`."""
    line = orjson.dumps({"command": command, "args": args or {}}) + b"\n"
    deadline = time.monotonic() + timeout
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(str(path))
            sock.sendall(line)
            data = _read_line(sock, deadline)
        except FileNotFoundError:
            raise ControlError(
                f"{path}: no such socket; is postgate running with [control] socket?"
            ) from None
        except PermissionError:
            raise ControlError(f"{path}: permission denied (see [control] allow_users)") from None
        except TimeoutError:
            raise ControlError(f"{path}: no answer within {timeout:g} s") from None
        except OSError as exc:
            raise ControlError(f"{path}: {exc.strerror or exc}") from None
    try:
        reply = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise ControlError(f"{path}: the daemon closed without an answer (refused?)") from None
    if not isinstance(reply, dict) or not reply.get("ok"):
        error = reply.get("error") if isinstance(reply, dict) else reply
        raise ControlError(f"{command}: {error}")
    return reply.get("result")


def _read_line(sock: socket.socket, deadline: float) -> bytes:
    data = b""
    while not data.endswith(b"\n"):
        sock.settimeout(max(deadline - time.monotonic(), 0.001))
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
        if len(data) > MAX_REPLY:
            raise ControlError(f"reply over {MAX_REPLY} bytes")
    return data


__all__ = ["ControlError", "request"]
