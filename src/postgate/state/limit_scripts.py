"""Rate limits in Redis: the Lua scripts, their arguments, and the view they answer.

The embedded store (`postgate.state.limits`) decides in memory; several MX
hosts share one Redis instead, and there a check and its reservation must be
one atomic step, or two hosts could both see room for the last message. So
the fact a ``limit`` check reads from Redis is fetched by `CHECK`, which in
one round trip reads the counters and the reservations of the messages in
flight and, when this message fits every window, reserves for it. It answers
what it read *before* reserving; the pure check (`postgate.rules.limits`)
then comes to the same conclusion from the same numbers, so the answer and
the reservation always agree. `CHARGE` commits a message at END-OF-MESSAGE
and ends its reservations; `RELEASE` ends them for a message refused or
abandoned.

Layout, under the configured prefix ``P`` (every key expires by itself):

* ``P limit:RULE:SECONDS:KEY``: a hash, the sliding window of
  `postgate.state.windows` (``h`` the head sub-bucket, ``0``..``10`` the
  cell of each sub-bucket modulo 11, so a charge writes one field), expiring
  when its last charge leaves the window;
* ``P limit-res:RULE:KEY``: a hash, message -> ``amount:expires``;
* ``P limit-flight:MESSAGE``: a hash, ``RULE|KEY`` -> amount, for the
  charge at END-OF-MESSAGE, which has no recipient to name the key.

A message is named by the daemon's node id and Postfix's ``instance``, which
is unique on one host only. The scripts name keys they build from their
arguments, so they suit one Redis (or a primary with replicas), not Redis
Cluster.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

from postgate.rules.limits import number
from postgate.state import windows

if TYPE_CHECKING:
    from collections.abc import Sequence

    from postgate.rules.limits import LimitCheck
    from postgate.wire.codec import PolicyRequest

_WINDOW_LUA: Final = """
local SLOTS, CELLS = 10, 11
local function count(key, seconds, now)
  local head = tonumber(redis.call('HGET', key, 'h'))
  if head == nil then return 0, nil end
  local current = math.floor(now * SLOTS / seconds)
  local low = math.max(math.max(current, head) - SLOTS, head - SLOTS)
  local cells = redis.call('HMGET', key, '0','1','2','3','4','5','6','7','8','9','10')
  local total = 0
  for b = low, head do total = total + (tonumber(cells[1 + b % CELLS]) or 0) end
  local ring = {head}
  for i = 1, CELLS do ring[i + 1] = tonumber(cells[i]) or 0 end
  return total, ring
end
"""

# KEYS: res, flight, ring per window. ARGV: now, message, timeout, mode, n,
# reserve (1/0), field (RULE|KEY), rule, then seconds and limit per window.
# Returns {others, own, {held field, amount ...}, {ring or {} per window}}.
CHECK: Final = (
    _WINDOW_LUA
    + """
local now, message, timeout = tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3])
local mode, n, reserve, field, rule = ARGV[4], tonumber(ARGV[5]), ARGV[6] == '1', ARGV[7], ARGV[8]
local others, own = 0, 0
local res = redis.call('HGETALL', KEYS[1])
for i = 1, #res, 2 do
  local amount, expires = string.match(res[i + 1], '^(%d+):([%d.]+)$')
  if amount == nil or tonumber(expires) <= now then
    redis.call('HDEL', KEYS[1], res[i])
  elseif res[i] == message then
    own = tonumber(amount)
  else
    others = others + tonumber(amount)
  end
end
local held = {}
local flight = redis.call('HGETALL', KEYS[2])
for i = 1, #flight, 2 do
  if string.sub(flight[i], 1, #rule + 1) == rule .. '|' then
    held[#held + 1] = string.sub(flight[i], #rule + 2)
    held[#held + 1] = flight[i + 1]
  end
end
local need = n
if mode == 'inc' then need = own + 1 elseif mode == 'max' then need = math.max(own, n) end
local over, rings = false, {}
for w = 1, #KEYS - 2 do
  local seconds, limit = tonumber(ARGV[7 + 2 * w]), tonumber(ARGV[8 + 2 * w])
  local total, ring = count(KEYS[2 + w], seconds, now)
  if total > limit - others - need then over = true end
  rings[w] = ring or {}
end
if reserve and not over then
  local ttl = math.ceil(timeout)
  redis.call('HSET', KEYS[1], message, need .. ':' .. (now + timeout))
  redis.call('EXPIRE', KEYS[1], ttl)
  redis.call('HSET', KEYS[2], field, need)
  redis.call('EXPIRE', KEYS[2], ttl)
end
return {others, own, held, rings}
"""
)

# ARGV: prefix, now, message, rule, number of windows, seconds..., then
# key, weight pairs. Charges every pair in every window, ends the holds.
CHARGE: Final = """
local SLOTS, CELLS = 10, 11
local prefix, now, message, rule = ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4]
local spans = tonumber(ARGV[5])
for p = 6 + spans, #ARGV, 2 do
  local key, weight = ARGV[p], tonumber(ARGV[p + 1])
  for s = 1, spans do
    local seconds = tonumber(ARGV[5 + s])
    local ring = prefix .. 'limit:' .. rule .. ':' .. seconds .. ':' .. key
    local current = math.floor(now * SLOTS / seconds)
    local head = tonumber(redis.call('HGET', ring, 'h'))
    if head == nil or current > head then
      local from = current - SLOTS
      if head ~= nil then from = math.max(head + 1, from) end
      for b = from, current do redis.call('HSET', ring, tostring(b % CELLS), 0) end
      redis.call('HSET', ring, 'h', current)
      head = current
    end
    redis.call('HINCRBY', ring, tostring(head % CELLS), weight)
    redis.call('PEXPIREAT', ring, math.ceil((head + CELLS) * seconds * 1000 / SLOTS))
  end
end
local flight = prefix .. 'limit-flight:' .. message
local fields = redis.call('HKEYS', flight)
for _, f in ipairs(fields) do
  if string.sub(f, 1, #rule + 1) == rule .. '|' then
    redis.call('HDEL', prefix .. 'limit-res:' .. rule .. ':' .. string.sub(f, #rule + 2), message)
    redis.call('HDEL', flight, f)
  end
end
return 1
"""

# ARGV: prefix, message. Ends every hold of the message (any rule).
RELEASE: Final = """
local prefix, message = ARGV[1], ARGV[2]
local flight = prefix .. 'limit-flight:' .. message
local fields = redis.call('HKEYS', flight)
for _, f in ipairs(fields) do
  local bar = string.find(f, '|', 1, true)
  if bar then
    local res = prefix .. 'limit-res:' .. string.sub(f, 1, bar - 1) .. ':' .. string.sub(f, bar + 1)
    redis.call('HDEL', res, message)
  end
end
redis.call('DEL', flight)
return #fields
"""

SCRIPTS: Final = {"limit_check": CHECK, "limit_charge": CHARGE, "limit_release": RELEASE}


def need_rule(check: LimitCheck, request: PolicyRequest) -> tuple[str, int]:
    """How `CHECK` computes what the message needs from what it holds (``own``).

    The same arithmetic as the check's own (`LimitCheck._need`), split so the
    script can finish it once it has read ``own``: ``inc`` is own + 1,
    ``max`` is max(own, n), ``fixed`` is n. A unit test holds the two equal.
    """
    stage = request.get("protocol_state").upper()
    if check.count == "messages":
        return "fixed", 1
    if check.count == "bytes":
        return "max", max(number(request.get("size")), 1)
    if stage == "DATA":
        given = number(request.get("recipient_count"))
        return ("fixed", given) if given else ("max", 1)
    return ("inc", 0) if stage == "RCPT" else ("max", 1)


@dataclass(slots=True)
class RedisView:
    """What `CHECK` read for one (rule, key): the check's `LimitView`."""

    reserved: int
    own: int
    held: dict[str, int] = field(default_factory=dict)
    rings: dict[int, windows.Ring] = field(default_factory=dict)

    def counted(self, seconds: int, now: float) -> int:
        ring = self.rings.get(seconds)
        return 0 if ring is None else windows.count(ring, seconds, now)

    def retry(self, seconds: int, now: float, room: int) -> float:
        ring = self.rings.get(seconds)
        if ring is None:
            return 0.0 if room >= 0 else float("inf")
        return windows.retry(ring, seconds, now, room)


def view_of(reply: Sequence[object], spans: Sequence[int]) -> RedisView:
    """`CHECK`'s reply as a view; anything malformed raises (the fact then fails)."""
    others, own, held, rings = reply
    pairs = list(held)  # type: ignore[call-overload]
    view = RedisView(int(others), int(own))  # type: ignore[call-overload]
    view.held = {str(pairs[i]): int(pairs[i + 1]) for i in range(0, len(pairs), 2)}
    for seconds, ring in zip(spans, rings, strict=True):  # type: ignore[call-overload]
        if ring:
            view.rings[seconds] = ring_of([int(cell) for cell in ring])
    return view


def ring_of(stored: list[int]) -> windows.Ring:
    """Redis's ring (head, then the cells by sub-bucket modulo 11) in `windows.Ring`'s order."""
    head, cells = stored[0], stored[1:]
    ring = [head] + [cells[(head - age) % windows.CELLS] for age in range(windows.CELLS)]
    while len(ring) > 2 and ring[-1] == 0:
        ring.pop()
    return ring


__all__ = ["CHARGE", "CHECK", "RELEASE", "SCRIPTS", "RedisView", "need_rule", "ring_of", "view_of"]
