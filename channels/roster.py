"""Who is connected, across instances: open sockets per user, and presence per channel.

Each instance keeps its own counts in memory (sockets per user, subscriptions per (channel,
user)) and, with Redis, mirrors them under one instance id so every instance can read the
cluster-wide picture:

- `{roster}:instances`: sorted set, instance id -> liveness deadline (Redis `TIME`, ms). Every
  instance pushes its deadline `ttl_s` ahead each `heartbeat_s`.
- `{roster}:i:<id>:u` / `{roster}:i:<id>:p`: that instance's sockets per user, and its present
  `channel\\nuser` pairs. Only 0 <-> 1 transitions of an instance's local counts reach Redis.
- `{roster}:users` (user -> open sockets on live instances), `{roster}:sockets` (their sum) and
  `{roster}:p:<channel>` (user -> instances where that user is present).

Every instance also sweeps: an instance whose deadline passed (SIGKILLed, partitioned) has its
entries subtracted from the totals in bounded atomic steps (Lua), and each (channel, user) that
leaves the last instance is reported once, to whichever sweeper removed it. So a dead
instance's users leave within `ttl_s + heartbeat_s`. An instance that finds itself expired or
unregistered (a long pause, a Redis restart or outage) pushes its whole state again
(`reconcile`), which reports the transitions that this causes.

All keys share the `{roster}` hash tag, so each script touches one Redis Cluster slot.
Without Redis (`MemoryRoster`) the instance is the whole cluster.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from redis.exceptions import RedisError

from channels.brokers.topology import RedisClient

log = logging.getLogger("kuda.roster")

PresenceChange = Callable[[str, str, int], Awaitable[None]]
"""(channel, "joined" | "left", user_id): a cluster-wide presence transition."""

SWEEP_BATCH = 500
SWEEP_STEPS_PER_TICK = 50


@dataclass(frozen=True, slots=True)
class Totals:
    sockets: int
    users: int
    instances: int


class Roster(Protocol):
    instance_id: str

    async def start(self, on_change: PresenceChange) -> None: ...

    async def stop(self) -> None: ...

    async def socket_opened(self, user_id: int, limit: int = 0) -> bool:
        """Count a new socket of the user. With `limit` > 0, refuse (False, nothing counted)
        when the user already has `limit` sockets open across instances."""

    async def socket_closed(self, user_id: int) -> None: ...

    async def user_sockets(self, user_id: int) -> int:
        """The user's open sockets on every live instance."""

    async def joined(self, channel: str, user_id: int) -> bool:
        """A subscription opened; True when it is the user's first on any instance."""

    async def left(self, channel: str, user_id: int) -> bool:
        """A subscription closed; True when it was the user's last on every instance."""

    async def members(self, channel: str) -> list[int]:
        """Distinct users with a live subscription to `channel`, ascending."""

    async def totals(self) -> Totals: ...

    async def sweep(self) -> None:
        """Remove what expired instances left behind now (reported through `on_change`)."""


class _Local:
    """This instance's own counts (the truth that Redis mirrors)."""

    def __init__(self) -> None:
        self.sockets: Counter[int] = Counter()
        self.presence: Counter[tuple[str, int]] = Counter()

    def open(self, user_id: int) -> None:
        self.sockets[user_id] += 1

    def close(self, user_id: int) -> None:
        self.sockets[user_id] -= 1
        if self.sockets[user_id] <= 0:
            del self.sockets[user_id]

    def join(self, channel: str, user_id: int) -> bool:
        """True on this instance's 0 -> 1 transition."""
        self.presence[channel, user_id] += 1
        return self.presence[channel, user_id] == 1

    def leave(self, channel: str, user_id: int) -> bool:
        """True on this instance's 1 -> 0 transition (False if it was not present)."""
        key = (channel, user_id)
        if self.presence[key] <= 0:
            self.presence.pop(key, None)
            return False
        self.presence[key] -= 1
        if self.presence[key] == 0:
            del self.presence[key]
            return True
        return False


class MemoryRoster:
    """One instance, no Redis: the local counts are the cluster's."""

    def __init__(self) -> None:
        self.instance_id = uuid.uuid4().hex
        self._local = _Local()

    async def start(self, on_change: PresenceChange) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def socket_opened(self, user_id: int, limit: int = 0) -> bool:
        if limit > 0 and self._local.sockets[user_id] >= limit:
            return False
        self._local.open(user_id)
        return True

    async def socket_closed(self, user_id: int) -> None:
        self._local.close(user_id)

    async def user_sockets(self, user_id: int) -> int:
        return self._local.sockets.get(user_id, 0)

    async def joined(self, channel: str, user_id: int) -> bool:
        return self._local.join(channel, user_id)

    async def left(self, channel: str, user_id: int) -> bool:
        return self._local.leave(channel, user_id)

    async def members(self, channel: str) -> list[int]:
        return sorted(u for (c, u) in self._local.presence if c == channel)

    async def totals(self) -> Totals:
        sockets = self._local.sockets
        return Totals(sum(sockets.values()), len(sockets), 1)

    async def sweep(self) -> None:
        return None


# Lua: KEYS[1] is `<prefix>{roster}:instances`; ARGV[1] the key base `<prefix>{roster}:`.
_LUA_PRELUDE = """
local base = ARGV[1]
local instances = KEYS[1]
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function add(key, field, delta)
  local n = redis.call('HINCRBY', key, field, delta)
  if n <= 0 then redis.call('HDEL', key, field) end
  return n
end
local function alive(id, now)
  local deadline = redis.call('ZSCORE', instances, id)
  return deadline and tonumber(deadline) >= now
end
local function split(field)
  local at = string.find(field, '\\n', 1, true)
  return string.sub(field, 1, at - 1), string.sub(field, at + 1)
end
"""

# ARGV: base, id, ttl_ms, channel, user, +1 | -1 -> {transition 0|1, was alive 0|1}
_LUA_PRESENCE = (
    _LUA_PRELUDE
    + """
local id, ttl, channel, user = ARGV[2], tonumber(ARGV[3]), ARGV[4], ARGV[5]
local delta = tonumber(ARGV[6])
local now = now_ms()
local ok = alive(id, now)
if not ok then redis.call('ZADD', instances, now + ttl, id) end
local mine = base .. 'i:' .. id .. ':p'
local field = channel .. '\\n' .. user
local changed = 0
if delta > 0 then
  if redis.call('HSETNX', mine, field, 1) == 1 then
    if redis.call('HINCRBY', base .. 'p:' .. channel, user, 1) == 1 then changed = 1 end
  end
else
  if redis.call('HDEL', mine, field) == 1 then
    if add(base .. 'p:' .. channel, user, -1) <= 0 then changed = 1 end
  end
end
return {changed, ok and 1 or 0}
"""
)

# ARGV: base, id, ttl_ms, user, delta, limit -> {accepted 0|1, was alive 0|1, user's total}
_LUA_SOCKET = (
    _LUA_PRELUDE
    + """
local id, ttl, user = ARGV[2], tonumber(ARGV[3]), ARGV[4]
local delta, limit = tonumber(ARGV[5]), tonumber(ARGV[6])
local now = now_ms()
local ok = alive(id, now)
if delta > 0 and limit > 0 then
  local current = tonumber(redis.call('HGET', base .. 'users', user) or '0')
  if current + delta > limit then return {0, ok and 1 or 0, current} end
end
if not ok then redis.call('ZADD', instances, now + ttl, id) end
add(base .. 'i:' .. id .. ':u', user, delta)
local total = add(base .. 'users', user, delta)
redis.call('INCRBY', base .. 'sockets', delta)
return {1, ok and 1 or 0, total}
"""
)

# ARGV: base, id, ttl_ms -> was alive 0|1 (and alive from now on)
_LUA_HEARTBEAT = (
    _LUA_PRELUDE
    + """
local now = now_ms()
local ok = alive(ARGV[2], now)
redis.call('ZADD', instances, now + tonumber(ARGV[3]), ARGV[2])
return ok and 1 or 0
"""
)

# ARGV: base, id, ttl_ms, n_users, user, count, ..., field, ... -> {joined fields, left fields}
# Replaces the instance's mirrored state with the given one, applying the difference to the
# cluster-wide totals.
_LUA_RECONCILE = (
    _LUA_PRELUDE
    + """
local id, ttl, n_users = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local ukey, pkey = base .. 'i:' .. id .. ':u', base .. 'i:' .. id .. ':p'
local delta, want_users = {}, {}
local old = redis.call('HGETALL', ukey)
for i = 1, #old, 2 do delta[old[i]] = -tonumber(old[i + 1]) end
local at = 5
for _ = 1, n_users do
  local user, count = ARGV[at], tonumber(ARGV[at + 1])
  delta[user] = (delta[user] or 0) + count
  want_users[#want_users + 1] = {user, count}
  at = at + 2
end
local sockets = 0
for user, d in pairs(delta) do
  if d ~= 0 then add(base .. 'users', user, d); sockets = sockets + d end
end
if sockets ~= 0 then redis.call('INCRBY', base .. 'sockets', sockets) end
redis.call('DEL', ukey)
for _, pair in ipairs(want_users) do redis.call('HSET', ukey, pair[1], pair[2]) end
local have, want = {}, {}
for _, field in ipairs(redis.call('HKEYS', pkey)) do have[field] = true end
for i = at, #ARGV do want[ARGV[i]] = true end
local joined, left = {}, {}
for field in pairs(have) do
  if not want[field] then
    local channel, user = split(field)
    if add(base .. 'p:' .. channel, user, -1) <= 0 then left[#left + 1] = field end
    redis.call('HDEL', pkey, field)
  end
end
for field in pairs(want) do
  if not have[field] then
    local channel, user = split(field)
    if redis.call('HINCRBY', base .. 'p:' .. channel, user, 1) == 1 then
      joined[#joined + 1] = field
    end
    redis.call('HSET', pkey, field, 1)
  end
end
redis.call('ZADD', instances, now_ms() + ttl, id)
return {joined, left}
"""
)

# ARGV: base, batch, [id] -> {} when no instance is expired, else {id, finished 0|1, left...}.
# With an id (graceful stop), that instance is removed whatever its deadline.
_LUA_SWEEP = (
    _LUA_PRELUDE
    + """
local batch = tonumber(ARGV[2])
local id = ARGV[3]
if not id then
  local dead = redis.call('ZRANGEBYSCORE', instances, '-inf', '(' .. now_ms(), 'LIMIT', 0, 1)
  if #dead == 0 then return {} end
  id = dead[1]
end
local ukey, pkey = base .. 'i:' .. id .. ':u', base .. 'i:' .. id .. ':p'
local result = {id, 0}
local fields = redis.call('HRANDFIELD', pkey, batch)
for _, field in ipairs(fields) do
  local channel, user = split(field)
  if add(base .. 'p:' .. channel, user, -1) <= 0 then result[#result + 1] = field end
  redis.call('HDEL', pkey, field)
end
if #fields < batch then
  local users = redis.call('HRANDFIELD', ukey, batch - #fields, 'WITHVALUES')
  local sockets = 0
  for i = 1, #users, 2 do
    add(base .. 'users', users[i], -tonumber(users[i + 1]))
    sockets = sockets + tonumber(users[i + 1])
    redis.call('HDEL', ukey, users[i])
  end
  if sockets ~= 0 then redis.call('INCRBY', base .. 'sockets', -sockets) end
  if redis.call('EXISTS', pkey) == 0 and redis.call('EXISTS', ukey) == 0 then
    redis.call('ZREM', instances, id)
    result[2] = 1
  end
end
return result
"""
)

# ARGV: base -> {sockets, users, live instances}
_LUA_TOTALS = (
    _LUA_PRELUDE
    + """
return {
  tonumber(redis.call('GET', base .. 'sockets') or '0'),
  redis.call('HLEN', base .. 'users'),
  redis.call('ZCOUNT', instances, now_ms(), '+inf'),
}
"""
)


class RedisRoster:
    """The roster mirrored in Redis (see the module docstring)."""

    def __init__(
        self,
        redis: RedisClient,
        prefix: str,
        *,
        heartbeat_s: float = 1.0,
        ttl_s: float = 5.0,
        owns_client: bool = False,
    ) -> None:
        self.instance_id = uuid.uuid4().hex
        self._redis = redis
        self._owns_client = owns_client
        self._base = f"{prefix}{{roster}}:"
        self._keys = [self._base + "instances"]
        self._heartbeat_s = heartbeat_s
        self._ttl_ms = int(ttl_s * 1000)
        self._local = _Local()
        self._locks: dict[tuple[str, int], tuple[asyncio.Lock, list[int]]] = {}
        self._stale = True  # Redis may not hold this instance's state: push it all
        self._on_change: PresenceChange | None = None
        self._task: asyncio.Task[None] | None = None
        self._presence = redis.register_script(_LUA_PRESENCE)
        self._socket = redis.register_script(_LUA_SOCKET)
        self._heartbeat = redis.register_script(_LUA_HEARTBEAT)
        self._reconcile = redis.register_script(_LUA_RECONCILE)
        self._sweep = redis.register_script(_LUA_SWEEP)
        self._totals = redis.register_script(_LUA_TOTALS)

    # Lifecycle ----------------------------------------------------------------------------

    async def start(self, on_change: PresenceChange) -> None:
        self._on_change = on_change
        with contextlib.suppress(RedisError, OSError):
            await self._tick()
        self._task = asyncio.create_task(self._loop(), name="kuda-roster")

    async def stop(self) -> None:
        """Leave the cluster at once (sockets are closed by now; whatever is left goes)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        try:
            for _ in range(1000):
                step = await self._sweep(self._keys, [self._base, SWEEP_BATCH, self.instance_id])
                await self._report_left(step[2:])
                if int(step[1]):
                    break
        except (RedisError, OSError) as exc:
            log.warning("could not leave the roster (%s); others sweep it after the TTL", exc)
        if self._owns_client:
            await self._redis.aclose()

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self._heartbeat_s)
            try:
                await self._tick()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis down or slow: push everything once it is back
                self._stale = True
                log.warning("roster heartbeat failed: %s", exc)

    async def _tick(self) -> None:
        was_alive = int(
            await self._heartbeat(self._keys, [self._base, self.instance_id, self._ttl_ms])
        )
        if not was_alive or self._stale:
            await self._push_state()
        await self.sweep()

    async def _push_state(self) -> None:
        self._stale = False
        local = self._local
        args: list[Any] = [self._base, self.instance_id, self._ttl_ms, len(local.sockets)]
        for user_id, count in local.sockets.items():
            args += [user_id, count]
        args += [f"{channel}\n{user_id}" for channel, user_id in local.presence]
        try:
            joined, left = await self._reconcile(self._keys, args)
        except BaseException:
            self._stale = True
            raise
        log.info("roster state pushed: %d joined, %d left", len(joined), len(left))
        await self._report("joined", joined)
        await self._report_left(left)

    async def sweep(self) -> None:
        for _ in range(SWEEP_STEPS_PER_TICK):
            step = await self._sweep(self._keys, [self._base, SWEEP_BATCH])
            if not step:
                return
            await self._report_left(step[2:])
            if int(step[1]):
                log.info("instance %s expired; its entries are removed", _text(step[0]))

    async def _report_left(self, fields: list[Any]) -> None:
        await self._report("left", fields)

    async def _report(self, change: str, fields: list[Any]) -> None:
        if self._on_change is None:
            return
        for field in fields:
            channel, _, user = _text(field).rpartition("\n")
            try:
                await self._on_change(channel, change, int(user))
            except Exception:
                log.exception("presence.%s on %s not published", change, channel)

    # Sockets ------------------------------------------------------------------------------

    async def socket_opened(self, user_id: int, limit: int = 0) -> bool:
        try:
            accepted, alive, _ = await self._socket(
                self._keys, [self._base, self.instance_id, self._ttl_ms, user_id, 1, limit]
            )
        except (RedisError, OSError) as exc:
            log.warning("socket of user %s not counted in Redis: %s", user_id, exc)
            self._stale = True  # counted locally; pushed with the whole state later
            # The limit still holds, on this instance's own sockets (never switched off).
            if limit > 0 and self._local.sockets[user_id] >= limit:
                return False
            accepted, alive = 1, 1
        if not int(alive):
            self._stale = True
        if not int(accepted):
            return False
        self._local.open(user_id)
        return True

    async def socket_closed(self, user_id: int) -> None:
        self._local.close(user_id)
        try:
            _, alive, _ = await self._socket(
                self._keys, [self._base, self.instance_id, self._ttl_ms, user_id, -1, 0]
            )
            if not int(alive):
                self._stale = True
        except (RedisError, OSError) as exc:
            log.warning("socket close of user %s not counted in Redis: %s", user_id, exc)
            self._stale = True

    async def user_sockets(self, user_id: int) -> int:
        value = await self._redis.hget(self._base + "users", str(user_id))
        return int(value or 0)

    # Presence -----------------------------------------------------------------------------

    async def joined(self, channel: str, user_id: int) -> bool:
        if not self._local.join(channel, user_id):
            return False
        return await self._mirror(channel, user_id)

    async def left(self, channel: str, user_id: int) -> bool:
        if not self._local.leave(channel, user_id):
            return False
        return await self._mirror(channel, user_id)

    async def _mirror(self, channel: str, user_id: int) -> bool:
        """Bring Redis in line with this instance's count for (channel, user); calls for one
        key run one at a time, so a quick join + leave cannot reach Redis reversed."""
        key = (channel, user_id)
        lock, users = self._locks.setdefault(key, (asyncio.Lock(), [0]))
        users[0] += 1
        try:
            async with lock:
                return await self._mirror_now(channel, user_id)
        finally:
            users[0] -= 1
            if users[0] == 0:
                del self._locks[key]

    async def _mirror_now(self, channel: str, user_id: int) -> bool:
        present = self._local.presence.get((channel, user_id), 0) > 0
        args: list[str | int] = [
            self._base,
            self.instance_id,
            self._ttl_ms,
            channel,
            user_id,
            1 if present else -1,
        ]
        try:
            changed, alive = await self._presence(self._keys, args)
        except (RedisError, OSError) as exc:
            log.warning("presence on %s not mirrored in Redis: %s", channel, exc)
            self._stale = True
            return False
        if not int(alive):
            self._stale = True
        return bool(int(changed))

    async def members(self, channel: str) -> list[int]:
        users = await self._redis.hkeys(self._base + "p:" + channel)
        return sorted(int(u) for u in users)

    async def totals(self) -> Totals:
        sockets, users, instances = await self._totals(self._keys, [self._base])
        return Totals(max(0, int(sockets)), int(users), int(instances))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
