"""Who may talk to the policy listener: networks for TCP peers, credentials for UNIX ones.

Postfix's smtpd processes connect from loopback or through a UNIX socket in
the queue directory; anything else has no business asking. For a UNIX socket
the file mode says which local users can connect at all, and
``daemon.allow_users`` / ``daemon.allow_groups`` narrow it to Postfix's own
user or group by the credentials the kernel reports (SO_PEERCRED, unix(7)),
so a local user who can reach the socket still cannot hold its slots.
"""

from __future__ import annotations

import socket
import struct
from typing import TYPE_CHECKING, Any, Final, Protocol

from twisted.internet.address import IPv4Address, IPv6Address

from postgate.rules.networks import parse_address

if TYPE_CHECKING:
    from twisted.internet.interfaces import IAddress

    from postgate.rules.networks import NetworkSet

_UCRED: Final = struct.Struct("3i")  # struct ucred: pid, uid, gid


class Allowed(Protocol):
    """Peers a UNIX listener admits by credentials (``DaemonConfig`` fits, and the control's)."""

    @property
    def allow_uids(self) -> frozenset[int] | set[int]: ...
    @property
    def allow_gids(self) -> frozenset[int] | set[int]: ...


def describe(addr: IAddress) -> str:
    if isinstance(addr, IPv4Address | IPv6Address):
        return f"{addr.host}:{addr.port}"
    name: Any = getattr(addr, "name", None)
    return str(name.decode() if isinstance(name, bytes) else name or "unix")


def network_allowed(addr: IAddress, allow: NetworkSet) -> bool:
    """TCP peers must be in ``daemon.allow``; others are judged by `credentials_refused`."""
    if not isinstance(addr, IPv4Address | IPv6Address):
        return True
    # An IPv6 peer may carry a zone (fe80::1%eth0); IPv4-mapped peers are
    # matched as IPv4, like every network list (rules.networks).
    return parse_address(addr.host.split("%", 1)[0]) in allow


def credentials_refused(
    transport: object, daemon: Allowed, table: str = "daemon"
) -> dict[str, object] | None:
    """Why a UNIX peer may not ask (log fields), or None when it may; ``table`` names the keys."""
    if not (daemon.allow_uids or daemon.allow_gids):
        return None
    handle = getattr(transport, "getHandle", None)
    sock = handle() if handle is not None else None
    if not isinstance(sock, socket.socket) or sock.family != socket.AF_UNIX:
        return None
    try:
        pid, uid, gid = _UCRED.unpack(
            sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
        )
    except OSError as exc:  # fail closed: a peer we cannot name is not Postfix
        return {"reason": f"peer credentials unreadable: {exc.strerror or exc}"}
    if uid in daemon.allow_uids or gid in daemon.allow_gids:
        return None
    # Numbers, not names: a name lookup may ask LDAP, and this runs on the
    # reactor thread for every refused connection.
    return {
        "reason": f"peer not in {table}.allow_users or {table}.allow_groups",
        "pid": pid,
        "uid": uid,
        "gid": gid,
    }


__all__ = ["credentials_refused", "describe", "network_allowed"]
