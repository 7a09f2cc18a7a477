"""A policy server whose answers the test scripts: Postfix's peer without postgate.

It checks the Postfix harness on its own (what Postfix sends, over which
transport, at which stage) and plays misbehaving servers postgate must never
imitate. It speaks the wire format (docs/protocol.md, Requests and Replies) by
itself, so a codec bug cannot hide a harness bug.
"""

from __future__ import annotations

import contextlib
import socket
import socketserver
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Self

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping


class _Handler(socketserver.StreamRequestHandler):
    server: _Server

    def setup(self) -> None:
        super().setup()
        with self.server.owner.lock:
            self.server.owner.connections.add(self.connection)

    def finish(self) -> None:
        with self.server.owner.lock:
            self.server.owner.connections.discard(self.connection)
        super().finish()

    def handle(self) -> None:
        request: dict[str, str] = {}
        for raw in self.rfile:
            line = raw.rstrip(b"\n").decode(errors="surrogateescape")
            if line:
                name, _, value = line.partition("=")
                request[name] = value
                continue
            if not self._answer(request):
                return
            request = {}

    def _answer(self, request: dict[str, str]) -> bool:
        owner = self.server.owner
        with owner.lock:
            owner.requests.append(request)
        action = owner.answer(request)
        if action is None:  # play a server that hangs up without answering
            return False
        self.wfile.write(f"action={action}\n\n".encode())
        return True


class _Server(socketserver.ThreadingMixIn, socketserver.BaseServer):
    daemon_threads = True
    block_on_close = False
    owner: ScriptedPolicy


class _TCPServer(_Server, socketserver.TCPServer):
    allow_reuse_address = True


class _UnixServer(_Server, socketserver.UnixStreamServer):
    pass


def _dunno(_request: Mapping[str, str]) -> str | None:
    return "DUNNO"


class ScriptedPolicy:
    """Serves on ``address`` (``(host, port)`` or a socket path) from a thread.

    ``answer(request)`` returns the action text, or None to close the
    connection without a reply. Every request is kept in ``requests``.
    """

    def __init__(self, address: tuple[str, int] | Path) -> None:
        self.address = address
        self.answer: Callable[[Mapping[str, str]], str | None] = _dunno
        self.requests: list[dict[str, str]] = []
        self.lock = threading.Lock()
        self.connections: set[socket.socket] = set()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> Self:
        if isinstance(self.address, Path):
            self.address.unlink(missing_ok=True)
            server: _Server = _UnixServer(str(self.address), _Handler)
            self.address.chmod(0o666)  # smtpd connects as the postfix user
        else:
            server = _TCPServer(self.address, _Handler)
        server.owner = self
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        with self.lock:  # persistent connections outlive the accept loop: cut them
            for conn in self.connections:
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
        if isinstance(self.address, Path):
            self.address.unlink(missing_ok=True)
        assert self._thread is not None
        self._thread.join(5)
        self._server = None

    def seen(self, state: str) -> list[dict[str, str]]:
        with self.lock:
            return [r for r in self.requests if r.get("protocol_state") == state]

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()
