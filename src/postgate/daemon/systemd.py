"""What postgate and systemd tell each other: sd_notify(3) and inherited sockets.

Owns readiness (``READY=1``), reload (``RELOADING=1`` + ``MONOTONIC_USEC``),
shutdown (``STOPPING=1``), the ``STATUS=`` line and watchdog pings. Each
message is one datagram of ``NAME=value`` lines sent to ``$NOTIFY_SOCKET``,
so no libsystemd is needed (sd_notify(3)). Sending never
raises and never blocks the reactor: the socket is non-blocking, and a failed
send is logged once and then dropped, because a supervisor that cannot hear
us is no reason to stop answering Postfix. The service layer owns the timers.

Also owns listening on sockets systemd passes in (``systemd:`` endpoints):
`listen_service` is `strports.service` except that an inherited UNIX socket
keeps the file, mode and backlog its ``.socket`` unit gave it. Imports no
other postgate module.
"""

from __future__ import annotations

import os
import socket
import time
from socket import AF_UNIX
from typing import TYPE_CHECKING, Final, cast

import structlog
from twisted.application.internet import StreamServerEndpointService
from twisted.internet import defer, tcp, unix
from twisted.internet.endpoints import AdoptedStreamServerEndpoint, serverFromString
from twisted.internet.interfaces import IStreamServerEndpoint
from zope.interface import implementer

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from twisted.internet.interfaces import IListeningPort, IProtocolFactory, IReactorSocket

log = structlog.get_logger("postgate.daemon.systemd")

#: The environment names this module reads (systemd.exec(5), sd_notify(3)).
NOTIFY_SOCKET: Final = "NOTIFY_SOCKET"
WATCHDOG_USEC: Final = "WATCHDOG_USEC"
WATCHDOG_PID: Final = "WATCHDOG_PID"

# sd_notify(3): status text is one line; systemd shows it in `systemctl status`.
MAX_STATUS: Final = 200


def socket_address(value: str) -> str | bytes | None:
    """Translate ``$NOTIFY_SOCKET`` into an address `socket.sendto` takes.

    A leading ``@`` names a socket in the abstract namespace (sd_notify(3)),
    which Python spells with a leading NUL byte. Other schemes (``vsock:``)
    are refused: the unit's RestrictAddressFamilies= would forbid them anyway.
    """
    if value.startswith("/"):
        return value
    if value.startswith("@") and len(value) > 1:
        return b"\0" + value[1:].encode("utf-8", "surrogateescape")
    return None


def watchdog_interval(environ: Mapping[str, str], pid: int) -> float | None:
    """Seconds between pings: half of ``WATCHDOG_USEC``, as sd_watchdog_enabled(3) advises.

    ``WATCHDOG_PID``, when set, names the one process the watchdog is meant
    for; a child that inherited the variables must not ping.
    """
    owner = environ.get(WATCHDOG_PID, "")
    if owner and owner != str(pid):
        return None
    usec = environ.get(WATCHDOG_USEC, "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    return int(usec) / 2_000_000


def one_line(text: str) -> str:
    """Make ``text`` safe as the value of one ``NAME=value`` line."""
    flat = " ".join(text.split())
    return flat[:MAX_STATUS]


def monotonic_usec() -> int:
    """CLOCK_MONOTONIC in microseconds, the clock systemd compares reloads against."""
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


class Notifier:
    """Sends state changes to the service manager; does nothing outside systemd."""

    __slots__ = ("_address", "_clock", "_failed", "_interval", "_sock")

    def __init__(
        self,
        address: str | bytes | None,
        interval: float | None = None,
        clock: Callable[[], int] = monotonic_usec,
    ) -> None:
        self._address = address
        self._interval = interval if address is not None else None
        self._clock = clock
        self._sock: socket.socket | None = None
        self._failed = False

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> Notifier:
        """Build from ``$NOTIFY_SOCKET`` and the watchdog variables (os.environ by default)."""
        env = os.environ if environ is None else environ
        raw = env.get(NOTIFY_SOCKET, "")
        address = socket_address(raw)
        if raw and address is None:
            log.warning("systemd_notify_unsupported", notify_socket=raw)
        return cls(address, watchdog_interval(env, os.getpid()))

    @property
    def enabled(self) -> bool:
        return self._address is not None

    def ready(self, status: str) -> None:
        """Listeners are bound and rules loaded: systemd may now call us started."""
        self.send(f"READY=1\nSTATUS={one_line(status)}")

    def reloading(self) -> None:
        """A reload began; READY=1 ends it (systemd.service(5), Type=notify-reload)."""
        self.send(f"RELOADING=1\nMONOTONIC_USEC={self._clock()}\nSTATUS=reloading configuration")

    def stopping(self) -> None:
        self.send("STOPPING=1\nSTATUS=stopping")

    def status(self, text: str) -> None:
        self.send(f"STATUS={one_line(text)}")

    def ping(self) -> None:
        """Prove the reactor still turns; systemd restarts us after WatchdogSec= of silence."""
        self.send("WATCHDOG=1")

    def watchdog_interval(self) -> float | None:
        """Ping period in seconds, or None when no watchdog is armed or nobody listens."""
        return self._interval

    def send(self, message: str) -> None:
        """Send one datagram; drop it (logging the first failure) if that fails."""
        if self._address is None:
            return
        try:
            self._socket().sendto(message.encode("utf-8"), self._address)
        except OSError as exc:
            self._report(exc)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def _socket(self) -> socket.socket:
        if self._sock is None:
            kind = socket.SOCK_DGRAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK
            self._sock = socket.socket(socket.AF_UNIX, kind)
        return self._sock

    def _report(self, exc: OSError) -> None:
        # One line per process: a watchdog ping every 15 s must not flood the log.
        if not self._failed:
            self._failed = True
            log.warning(
                "systemd_notify_failed",
                notify_socket=_printable(self._address),
                error=exc.strerror or str(exc),
            )


def _printable(address: str | bytes | None) -> str:
    if isinstance(address, bytes):
        return "@" + address[1:].decode("utf-8", "backslashreplace")
    return str(address)


def listen_service(
    description: str, factory: IProtocolFactory, reactor: IReactorSocket, backlog: int = 50
) -> StreamServerEndpointService:
    """`strports.service` for one ``listen`` entry, safe for inherited UNIX sockets.

    A failed listen raises at start (``_raiseSynchronously``, as strports does)
    instead of leaving the daemon running deaf. ``backlog`` is the listen queue
    for sockets we open ourselves, unless the entry names one: every smtpd
    reconnects at once after a Postfix restart, and Twisted's 50 would leave
    the rest in SYN retries for a second or more. Inherited sockets keep the
    ``Backlog=`` of their ``.socket`` unit.
    """
    kind = description.split(":", 1)[0]
    if kind in {"tcp", "tcp6", "unix"} and "backlog=" not in description:
        description = f"{description}:backlog={backlog}"
    endpoint = _endpoint(description, reactor)
    service = StreamServerEndpointService(endpoint, factory)  # type: ignore[no-untyped-call,unused-ignore]
    service._raiseSynchronously = True  # noqa: SLF001 - the flag strports.service sets
    return service


def _endpoint(description: str, reactor: IReactorSocket) -> IStreamServerEndpoint:
    try:
        endpoint = serverFromString(reactor, description)  # type: ignore[no-untyped-call]
    except KeyError as exc:
        names = os.environ.get("LISTEN_FDNAMES") or "none"
        raise ValueError(
            f"{description}: systemd passed no socket named {exc.args[0]!r} "
            f"(LISTEN_FDNAMES: {names}); is its .socket unit active?"
        ) from None
    if isinstance(endpoint, AdoptedStreamServerEndpoint) and endpoint.addressFamily == AF_UNIX:
        return InheritedUnixEndpoint(reactor, endpoint.fileno)
    return cast("IStreamServerEndpoint", endpoint)


@implementer(IStreamServerEndpoint)
class InheritedUnixEndpoint:
    """Adopts a listening UNIX socket from systemd without touching its file.

    Twisted's own adoption (``AdoptedStreamServerEndpoint``, Twisted 26.10)
    chmods the path to 0666 and re-listens with backlog 50 when it starts
    (twisted#10261); when it stops it calls shutdown(2), which makes systemd's
    copy of the socket refuse every later connection, and unlinks the path,
    which systemd.socket(5) forbids. Under the unit's ``ProtectSystem=strict``
    and transient user the chmod even fails, so the daemon could not start.
    """

    def __init__(self, reactor: IReactorSocket, fileno: int) -> None:
        self.reactor = reactor
        self.fileno = fileno

    def listen(self, factory: IProtocolFactory) -> defer.Deferred[IListeningPort]:
        try:
            sock = socket.socket(fileno=self.fileno)
            sock.setblocking(False)  # noqa: FBT003 - socket's own API
            port = InheritedUnixPort(sock, factory, self.reactor)
            port.startListening()
        except BaseException:  # noqa: BLE001 - IStreamServerEndpoint reports failure by Deferred
            return defer.fail()
        return defer.succeed(port)


class InheritedUnixPort(unix.Port):
    """A listening port on a socket whose path, mode and backlog belong to systemd."""

    # Closing our descriptor is enough; shutdown(2) would act on systemd's too.
    _shouldShutdown = False

    def __init__(self, sock: socket.socket, factory: IProtocolFactory, reactor: object) -> None:
        super().__init__(sock.getsockname(), factory, reactor=reactor)
        self._inherited = sock
        self._inherited_factory = factory

    def startListening(self) -> None:
        # unix.Port.startListening minus bind, chmod and listen: all done by systemd.
        tcp._reservedFD.reserve()  # type: ignore[no-untyped-call]  # noqa: SLF001 - EMFILE fallback
        self._inherited_factory.doStart()
        self.connected = True
        self.socket = self._inherited
        self.fileno = self._inherited.fileno  # type: ignore[method-assign]
        self.numberAccepts = 100
        self.startReading()  # type: ignore[no-untyped-call]

    def connectionLost(self, reason: object) -> None:
        # Skip unix.Port's unlink: the path stays for the next activation.
        tcp.Port.connectionLost(self, reason)  # type: ignore[no-untyped-call]


__all__ = [
    "InheritedUnixEndpoint",
    "InheritedUnixPort",
    "Notifier",
    "listen_service",
    "monotonic_usec",
    "one_line",
    "socket_address",
    "watchdog_interval",
]
