"""The control socket: local tools ask the running daemon, one JSON line each way.

A UNIX socket (``[control] socket``, mode 0660 or 0600) that only root, the
daemon's own user and ``[control] allow_users`` / ``allow_groups`` may use,
checked by the credentials the kernel reports (SO_PEERCRED, unix(7)), as the
policy listener checks Postfix (`postgate.daemon.access`).

Protocol: the client sends one line, a JSON object
``{"command": NAME, "args": {...}}``, and reads one line back:
``{"ok": true, "result": ...}`` or ``{"ok": false, "error": TEXT}``; then the
daemon closes. A request is at most `MAX_REQUEST` bytes and must arrive,
and be answered, within `TIMEOUT` seconds, so a stuck client holds nothing.

Commands are registered by name on `Control`::

    daemon.control.register("state", handler)

``handler(args)`` gets the request's ``args`` (a dict) and returns anything
``orjson`` can write, or a Deferred of it; raising `CommandError` answers
``ok: false`` with its text, any other exception answers ``ok: false`` and
is logged. Handlers run on the reactor: anything slow (I/O, a backend) must
return a Deferred instead of blocking. A command's name is one word; the
``postgate`` command-line tools call them through
`postgate.commands.control_client.request`.
"""

from __future__ import annotations

import contextlib
import os
from typing import TYPE_CHECKING, Any, Final

import orjson
import structlog
from twisted.internet import defer
from twisted.internet.protocol import Factory, Protocol

from postgate.daemon.access import credentials_refused

if TYPE_CHECKING:
    from collections.abc import Callable

    from twisted.internet.interfaces import IAddress, IDelayedCall, IReactorTime
    from twisted.python.failure import Failure

    from postgate.config.ops import ControlSettings

    Handler = Callable[[dict[str, Any]], object]

log = structlog.get_logger("postgate")

MAX_REQUEST: Final = 64 * 1024
TIMEOUT: Final = 5.0


class CommandError(Exception):
    """A handler's refusal: the client shows the text; nothing is logged."""


class _Peers:
    """Who may ask: `credentials_refused` reads these two sets."""

    def __init__(self, settings: ControlSettings) -> None:
        self.allow_uids = settings.allow_uids | {0, os.getuid()}
        self.allow_gids = settings.allow_gids


class Control(Factory):
    """The registry of commands and the factory of the socket's connections."""

    noisy = False

    def __init__(self, settings: ControlSettings, reactor: IReactorTime) -> None:
        self.reactor = reactor
        self.peers = _Peers(settings)
        self.handlers: dict[str, Handler] = {}

    def register(self, name: str, handler: Handler) -> None:
        """Answer ``name`` with ``handler``; a second registration of a name is a bug."""
        if not name.isidentifier():
            raise ValueError(f"command name {name!r} is not one word")
        if name in self.handlers:
            raise ValueError(f"command {name!r} is already registered")
        self.handlers[name] = handler

    def buildProtocol(self, addr: IAddress | None) -> ControlProtocol:  # noqa: ARG002
        return ControlProtocol(self)

    def run(self, line: bytes) -> defer.Deferred[object]:
        """The handler's result for one request line; raises `CommandError` on a bad one."""
        try:
            request = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise CommandError(f"not a JSON line: {exc}") from None
        if not isinstance(request, dict) or not isinstance(request.get("command"), str):
            raise CommandError('expected {"command": NAME, "args": {...}}')
        args = request.get("args", {})
        if not isinstance(args, dict):
            raise CommandError("args must be an object")
        handler = self.handlers.get(request["command"])
        if handler is None:
            known = ", ".join(sorted(self.handlers))
            raise CommandError(f"unknown command {request['command']!r}; known: {known}")
        return defer.maybeDeferred(handler, args)


class ControlProtocol(Protocol):
    """One client: a request line in, a reply line out, then close."""

    def __init__(self, control: Control) -> None:
        self._control = control
        self._buffer = b""
        self._timer: IDelayedCall | None = None
        self._answered = False

    def connectionMade(self) -> None:
        refused = credentials_refused(self.transport, self._control.peers, "control")
        if refused is not None:
            log.warning("connection_refused", listener="control", **refused)
            self.transport.abortConnection()  # type: ignore[union-attr]
            return
        self._timer = self._control.reactor.callLater(TIMEOUT, self._timed_out)

    def dataReceived(self, data: bytes) -> None:
        if self._answered:
            return
        self._buffer += data
        line, newline, _ = self._buffer.partition(b"\n")
        if not newline:
            if len(self._buffer) > MAX_REQUEST:
                self._reply({"ok": False, "error": f"request over {MAX_REQUEST} bytes"})
            return
        self._answered = True
        try:
            result = self._control.run(line)
        except CommandError as exc:
            self._reply({"ok": False, "error": str(exc)})
            return
        result.addCallbacks(lambda value: self._reply({"ok": True, "result": value}), self._failed)

    def _failed(self, failure: Failure) -> None:
        if isinstance(failure.value, CommandError):
            self._reply({"ok": False, "error": str(failure.value)})
            return
        log.error("control_command_failed", error=repr(failure.value))
        self._reply({"ok": False, "error": f"the command failed: {failure.value!r}"})

    def _reply(self, message: dict[str, object]) -> None:
        self._answered = True
        self._cancel()
        if self.transport is None:
            return
        try:
            data = orjson.dumps(message, default=str) + b"\n"
        except TypeError as exc:
            data = orjson.dumps({"ok": False, "error": f"unwritable result: {exc}"}) + b"\n"
        self.transport.write(data)
        self.transport.loseConnection()

    def _timed_out(self) -> None:
        self._timer = None
        if self.transport is not None:
            self.transport.abortConnection()  # type: ignore[attr-defined]

    def _cancel(self) -> None:
        if self._timer is not None:
            with contextlib.suppress(Exception):
                self._timer.cancel()
            self._timer = None

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]  # noqa: ARG002
        self._cancel()


def endpoint(settings: ControlSettings) -> str:
    """The Twisted endpoint for the socket; ``lockfile`` lets a restart reuse a stale path."""
    assert settings.socket is not None
    path = str(settings.socket).replace("\\", "\\\\").replace(":", "\\:")
    return f"unix:{path}:mode={settings.mode:o}:lockfile=1"


__all__ = ["CommandError", "Control", "endpoint"]
