"""Redis for state shared by several MX hosts: Lua scripts by SHA, outages told once.

A thin adapter over txredisapi (Twisted-native; nothing here blocks the
reactor). The state's algorithms live in their Lua scripts, one atomic round
trip per operation; this module only runs them:

* ``EVALSHA`` first; a Redis that forgot the script (restarted, flushed)
  answers NOSCRIPT, and the script is sent once in full (``EVAL``), which
  loads it again.
* While no connection is up, a call fails at once instead of queueing behind
  the reconnect: an outage then costs each answer nothing, and pending calls
  cannot pile up. The factory reconnects by itself (at most
  `RECONNECT_MAX_DELAY` s apart). txredisapi gives up for good when AUTH or
  SELECT fails on a new connection (a Redis paused just then), so a pool
  that has had no connection for `REBUILD_AFTER` s is replaced by a new one.
* A reply later than ``reply_timeout`` fails the call (txredisapi drops the
  connection), so a stopped Redis (SIGSTOP) holds no answer; the fact
  gatherer's deadline bounds the whole request anyway. The Deferred handed
  out is shielded: cancelling it at the deadline leaves the protocol's own
  Deferred to finish when the reply comes.
* ``redis_unavailable`` is logged when an outage starts and
  ``redis_recovered`` when a call succeeds again, never once per request.
"""

from __future__ import annotations

import hashlib
import time
from typing import TYPE_CHECKING, Any, Final

import structlog
import txredisapi
from twisted.internet.defer import Deferred, fail
from twisted.python.failure import Failure

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from postgate.config.redis import RedisSettings

log = structlog.get_logger("postgate")

RECONNECT_MAX_DELAY: Final = 2.0
REBUILD_AFTER: Final = 5.0


class RedisDownError(Exception):
    """No connection to Redis is up; the call was not sent."""


class Redis:
    """One connection to one Redis, and the Lua scripts run on it."""

    def __init__(self, settings: RedisSettings, scripts: Mapping[str, str]) -> None:
        self.settings = settings
        self._scripts = {
            name: (source, hashlib.sha1(source.encode()).hexdigest())  # noqa: S324 - Redis names scripts by SHA-1
            for name, source in scripts.items()
        }
        self._handler: Any = None
        self.up = True  # as far as the log has said
        self.calls = 0
        self.errors = 0
        self.seconds = 0.0  # summed round-trip time of the calls that succeeded
        self._built = 0.0  # when the pool was made (monotonic)

    def start(self) -> None:
        self._built = time.monotonic()
        s = self.settings
        common = {
            "dbid": s.database or None,  # 0 is Redis's default: no SELECT to fail
            # One connection: scripts run in the order they are sent, so a
            # message's charge always lands before its session's next check.
            # Redis runs one script at a time anyway.
            "poolsize": 1,
            "reconnect": True,
            "password": s.password,
            "connectTimeout": s.connect_timeout,
            "replyTimeout": s.reply_timeout,
            "convertNumbers": True,
        }
        if s.socket is not None:
            self._handler = txredisapi.lazyUnixConnectionPool(str(s.socket), **common)
        else:
            self._handler = txredisapi.lazyConnectionPool(
                s.host, s.port, username=s.username, **common
            )
        self._handler._factory.maxDelay = RECONNECT_MAX_DELAY  # noqa: SLF001 - no public knob

    def stop(self) -> Deferred[None]:
        handler, self._handler = self._handler, None
        if handler is None:
            return Deferred.fromCoroutine(_nothing())
        done: Deferred[None] = handler.disconnect()
        return done

    @property
    def connected(self) -> bool:
        return self._handler is not None and self._handler._factory.size > 0  # noqa: SLF001

    def run(self, name: str, keys: Sequence[str], args: Sequence[object]) -> Deferred[Any]:
        """Run script ``name``; fails at once with `RedisDownError` while disconnected."""
        self.calls += 1
        if not self.connected:
            self._failed_now(RedisDownError(f"no connection to {self.settings.address}"))
            if self._handler is not None and time.monotonic() - self._built > REBUILD_AFTER:
                self._handler.disconnect().addErrback(lambda _: None)
                self.start()
            return fail(RedisDownError(self.settings.address))
        source, sha = self._scripts[name]
        started = time.monotonic()
        sent: Deferred[Any] = self._handler.evalsha(sha, list(keys), list(args))
        sent.addErrback(self._unknown_script, source, keys, args)
        sent.addCallbacks(self._ok, self._failed, callbackArgs=(started,))
        shielded: Deferred[Any] = Deferred()
        sent.addBoth(_pass_on, shielded)
        return shielded

    def _unknown_script(
        self, failure: Failure, source: str, keys: Sequence[str], args: Sequence[object]
    ) -> Deferred[Any] | Failure:
        if not isinstance(failure.value, txredisapi.ScriptDoesNotExist):
            return failure
        again: Deferred[Any] = self._handler.eval(source, list(keys), list(args))
        return again

    def _ok(self, result: object, started: float) -> object:
        self.seconds += time.monotonic() - started
        if not self.up:
            self.up = True
            log.info("redis_recovered", redis=self.settings.address)
        return result

    def _failed(self, failure: Failure) -> Failure:
        self._failed_now(failure.value or RedisDownError(self.settings.address))
        return failure

    def _failed_now(self, error: BaseException) -> None:
        self.errors += 1
        if self.up:
            self.up = False
            log.warning("redis_unavailable", redis=self.settings.address, reason=repr(error))


def _pass_on(result: object, shielded: Deferred[Any]) -> None:
    """Hand the protocol's result on; a late one, after the caller gave up, is dropped."""
    if shielded.called:
        return
    if isinstance(result, Failure):
        shielded.errback(result)
    else:
        shielded.callback(result)


async def _nothing() -> None:
    return None


__all__ = ["REBUILD_AFTER", "RECONNECT_MAX_DELAY", "Redis", "RedisDownError"]
