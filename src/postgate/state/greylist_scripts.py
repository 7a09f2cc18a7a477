"""Greylisting in Redis: what several MX hosts share, as two Lua scripts.

`SEEN` reads a request's triplet and client records, for the check to judge
(`postgate.rules.greylisting.step`, purely). `RECORD`, run after the
decision, is the same step on the server: it reads both records again,
judges and writes what `step` says to store, atomically, so two hosts that
see the same triplet at once cannot lose each other's sighting. It is the
embedded store's `GreylistStore.record`, line for line; a test runs both on
the same random sightings and compares.

Keys, under the configured prefix ``P``: ``P grey:t:TRIPLET`` (a hash:
``first``, ``last``) and ``P grey:c:CLIENT`` (``passes``, ``last``), each
expiring ``lifetime`` seconds after it was last written.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from postgate.rules.greylisting import Client, Entry, Seen

if TYPE_CHECKING:
    from collections.abc import Sequence

    from postgate.rules.greylisting import Settings

# KEYS: triplet, client. Returns {first, last, passes, last} (false when absent).
SEEN: Final = """
local e = redis.call('HMGET', KEYS[1], 'first', 'last')
local c = redis.call('HMGET', KEYS[2], 'passes', 'last')
return {e[1], e[2], c[1], c[2]}
"""

# KEYS: triplet, client. ARGV: now, delay, retry_window, lifetime, allowlist_after.
RECORD: Final = """
local now, delay, retry = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local lifetime, after = tonumber(ARGV[4]), tonumber(ARGV[5])
local ttl = math.ceil(lifetime)
local e = redis.call('HMGET', KEYS[1], 'first', 'last')
local c = redis.call('HMGET', KEYS[2], 'passes', 'last')
local efirst, elast = tonumber(e[1]), tonumber(e[2])
local passes, clast = tonumber(c[1]), tonumber(c[2])
if elast and now - elast > lifetime then efirst, elast = nil, nil end
if clast and now - clast > lifetime then passes, clast = nil, nil end
local function counted()
  if passes == nil then return 1, now end
  if now >= clast + 3600 or clast > now then return passes + 1, now end
  return passes, clast
end
local function client(p, l)
  if p ~= passes or l ~= clast then
    redis.call('HSET', KEYS[2], 'passes', p, 'last', string.format('%.6f', l))
    redis.call('EXPIRE', KEYS[2], ttl)
  end
end
local function entry(f, l)
  redis.call('HSET', KEYS[1], 'first', string.format('%.6f', f), 'last', string.format('%.6f', l))
  redis.call('EXPIRE', KEYS[1], ttl)
end
if passes and after > 0 and after <= passes then
  client(counted())
  return 'allowlisted'
end
local why, first = 'new', now
if efirst then
  local known = elast - efirst >= delay
  first = math.min(efirst, now)
  if known then why = 'known' else why = 'early' end
  if not known and now - first > retry then first, why = now, 'restarted' end
end
local wait = 0
if why ~= 'known' then wait = delay - (now - first) end
entry(first, now)
if wait > 0 or why == 'known' then return why end
if after > 0 then client(counted()) end
return 'passed'
"""

SCRIPTS: Final = {"grey_seen": SEEN, "grey_record": RECORD}


def record_args(settings: Settings, now: float) -> list[object]:
    return [
        f"{now:.6f}",
        repr(settings.delay),
        repr(settings.retry_window),
        repr(settings.lifetime),
        settings.allowlist_after,
    ]


def seen_of(reply: Sequence[object]) -> Seen:
    """`SEEN`'s reply as the check reads it; anything malformed raises (the fact then fails)."""
    first, last, passes, seen = (None if v is None else str(v) for v in reply)
    entry = Entry(float(first), float(last)) if first and last else None
    client = Client(int(passes), float(seen)) if passes and seen else None
    return Seen(entry, client)


__all__ = ["RECORD", "SCRIPTS", "SEEN", "record_args", "seen_of"]
