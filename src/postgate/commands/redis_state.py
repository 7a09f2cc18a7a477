"""``postgate state`` against Redis: the shared counters, read and reset directly.

With ``[state] backend = "redis"`` the counters live in Redis, not in any
one daemon, so the command talks to Redis itself, with the daemon's own
``[state.redis]`` settings. A command-line tool may block, so this is a
plain socket speaking RESP (the Redis protocol), bounded by the configured
timeouts; keys are found with SCAN, never KEYS, so a large Redis is not
stalled. The counters are read into a `LimitStore` and answered by the same
`postgate.state.report.handle` as the embedded store's.
"""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING, Any, Final

from postgate.state.limit_scripts import ring_of
from postgate.state.limits import LimitStore
from postgate.state.report import StateError, handle

if TYPE_CHECKING:
    from postgate.config.redis import RedisSettings

MAX_REPLY: Final = 64 << 20  # bytes of one reply: more is not a postgate key


class RespClient:
    """One blocking connection to Redis, for a command-line tool."""

    def __init__(self, settings: RedisSettings) -> None:
        timeout = settings.connect_timeout + settings.reply_timeout
        try:
            if settings.socket is not None:
                self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                self.sock.settimeout(timeout)
                self.sock.connect(str(settings.socket))
            else:
                self.sock = socket.create_connection((settings.host, settings.port), timeout)
        except OSError as exc:
            raise StateError(f"Redis at {settings.address}: {exc}") from None
        self.sock.settimeout(max(timeout, 5.0))
        self.file = self.sock.makefile("rb")
        if settings.password is not None:
            who = [settings.username] if settings.username else []
            self.call("AUTH", *who, settings.password)
        if settings.database:
            self.call("SELECT", str(settings.database))

    def close(self) -> None:
        self.file.close()
        self.sock.close()

    def call(self, *words: str) -> Any:
        parts = [f"*{len(words)}\r\n".encode()]
        for word in words:
            data = word.encode()
            parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
        try:
            self.sock.sendall(b"".join(parts))
            return self._reply()
        except OSError as exc:
            raise StateError(f"Redis: {exc}") from None

    def _reply(self) -> Any:
        line = self.file.readline(MAX_REPLY)
        kind, rest = line[:1], line[1:].rstrip(b"\r\n")
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise StateError(f"Redis: {rest.decode(errors='replace')}")
        if kind == b":":
            return int(rest)
        if kind == b"$":
            size = int(rest)
            return None if size < 0 else self.file.read(size + 2)[:-2].decode()
        if kind == b"*":
            size = int(rest)
            return None if size < 0 else [self._reply() for _ in range(size)]
        raise StateError(f"Redis: unexpected reply {line[:40]!r}")

    def scan(self, pattern: str) -> list[str]:
        found: list[str] = []
        cursor = "0"
        while True:
            cursor, keys = self.call("SCAN", cursor, "MATCH", pattern, "COUNT", "1000")
            found += keys
            if cursor == "0":
                return found


def _store(client: RespClient, prefix: str) -> LimitStore:
    """The counters in Redis as a store, named as the embedded store names them."""
    store = LimitStore()
    for name in client.scan(f"{_glob(prefix)}limit:*"):
        fields = client.call("HGETALL", name)
        cells = dict(zip(fields[::2], fields[1::2], strict=True))
        if "h" not in cells:
            continue
        stored = [int(cells["h"])] + [int(cells.get(str(i), 0)) for i in range(11)]
        store.counters[name[len(prefix) + len("limit:") :]] = ring_of(stored)
    for name in client.scan(f"{_glob(prefix)}limit-res:*"):
        rule, key = name[len(prefix) + len("limit-res:") :].split(":", 1)
        holds = client.call("HVALS", name)
        store.reserved[rule, key] = sum(int(h.split(":", 1)[0]) for h in holds)
    return store


def _glob(text: str) -> str:
    """``text`` matched literally by SCAN's MATCH pattern."""
    return "".join(f"\\{c}" if c in "*?[]\\" else c for c in text)


def redis_state(settings: RedisSettings, args: dict[str, Any], now: float) -> dict[str, Any]:
    """One ``state`` request answered from Redis: list, show, or reset (DEL)."""
    client = RespClient(settings)
    try:
        store = _store(client, settings.prefix)
        if args.get("action") != "reset":
            return handle(store, args, now)
        before = set(store.counters)
        answer = handle(store, args, now)  # checks the selection, resets in memory
        for gone in sorted(before - set(store.counters)):
            client.call("DEL", f"{settings.prefix}limit:{gone}")
        return answer
    finally:
        client.close()


__all__ = ["RespClient", "redis_state"]
