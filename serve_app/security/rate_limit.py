"""Per-tenant request rates and in-flight quotas, decided in one atomic step.

Rates use GCRA (a token bucket kept as one timestamp per bucket): a tenant may spend its
whole minute's quota at once, then earns it back evenly. In-flight requests are
members of a sorted set scored by expiry, so a slot whose replica crashed frees itself.
`RedisLimiter` shares both between every Gateway replica (one Lua script, Redis's own
clock); `LocalLimiter` is the same arithmetic in one process, for the embedded default.
"""

from __future__ import annotations

import math
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol

Status = Literal["admitted", "rate_limited", "concurrency_limited"]
STATUS_CODES: dict[int, Status] = {1: "admitted", 0: "rate_limited", 2: "concurrency_limited"}
# A full in-flight quota frees as requests finish: ask clients to come back soon.
CONCURRENCY_RETRY_S = 1


@dataclass(frozen=True)
class Bucket:
    """`limit` requests per `window_s`; `name` is the policy name clients see."""

    name: str
    key: str
    limit: int
    window_s: int = 60


@dataclass(frozen=True)
class BucketState:
    bucket: Bucket
    remaining: int
    # Seconds until the bucket is full again.
    reset_s: int


@dataclass(frozen=True)
class Admission:
    status: Status
    buckets: tuple[BucketState, ...]
    retry_after_s: int
    # The in-flight slot to release when the request ends (admitted only).
    slot: str | None


class LimiterBackend(Protocol):
    async def admit(
        self, slots_key: str, max_concurrent: int, slot_ttl_s: float, buckets: list[Bucket]
    ) -> Admission: ...

    async def release(self, slots_key: str, slot: str) -> None: ...

    async def close(self) -> None: ...


def _admission(code: int, buckets: list[Bucket], numbers: list[int], slot: str) -> Admission:
    states = []
    retry_ms = 0
    for i, bucket in enumerate(buckets):
        remaining, bucket_retry_ms, reset_ms = numbers[3 * i : 3 * i + 3]
        retry_ms = max(retry_ms, bucket_retry_ms)
        if code != 1 and bucket_retry_ms == 0:
            remaining += 1  # counted as if spent, but a refused request spends nothing
        states.append(BucketState(bucket, max(0, remaining), math.ceil(reset_ms / 1000)))
    status = STATUS_CODES[code]
    if status == "rate_limited":
        retry_after = max(1, math.ceil(retry_ms / 1000))
    else:
        retry_after = CONCURRENCY_RETRY_S if status == "concurrency_limited" else 0
    return Admission(status, tuple(states), retry_after, slot if status == "admitted" else None)


# KEYS[1]: the tenant's in-flight set; KEYS[2..]: request buckets.
# ARGV: max concurrent, slot ttl (ms), slot token, then limit and window (ms) per bucket.
# Returns {status, then remaining, retry ms, reset ms per bucket}; status 1 admitted,
# 0 rate limited, 2 in-flight quota full. Nothing is spent unless admitted.
ADMIT_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local slots = KEYS[1]
local ttl = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', slots, '-inf', now)
local status = 1
if redis.call('ZCARD', slots) >= tonumber(ARGV[1]) then status = 2 end
local out = {}
local tats = {}
local denied = false
for j = 1, #KEYS - 1 do
  local limit = tonumber(ARGV[2 + 2 * j])
  local window = tonumber(ARGV[3 + 2 * j])
  local interval = window / limit
  local tat = tonumber(redis.call('GET', KEYS[j + 1])) or now
  if tat < now then tat = now end
  local allow_at = tat + interval - window
  if now < allow_at then
    denied = true
    tats[j] = tat
    out[#out + 1] = 0
    out[#out + 1] = math.ceil(allow_at - now)
  else
    tats[j] = tat + interval
    out[#out + 1] = math.floor((now - allow_at) / interval)
    out[#out + 1] = 0
  end
  out[#out + 1] = math.ceil(tats[j] - now)
end
if denied then status = 0 end
if status == 1 then
  for j = 1, #KEYS - 1 do
    redis.call('SET', KEYS[j + 1], tostring(tats[j]), 'PX', math.ceil(tats[j] - now) + 1)
  end
  redis.call('ZADD', slots, now + ttl, ARGV[3])
  if redis.call('PTTL', slots) < ttl then redis.call('PEXPIRE', slots, ttl) end
end
local result = {status}
for i = 1, #out do result[#result + 1] = out[i] end
return result
"""


class RedisLimiter:
    def __init__(self, url: str, timeout_s: float = 0.5):
        import redis.asyncio as redis

        self.client = redis.Redis.from_url(
            url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s
        )
        self._admit = self.client.register_script(ADMIT_SCRIPT)

    async def admit(
        self, slots_key: str, max_concurrent: int, slot_ttl_s: float, buckets: list[Bucket]
    ) -> Admission:
        slot = secrets.token_hex(8)
        args: list[int | str] = [max_concurrent, math.ceil(slot_ttl_s * 1000), slot]
        for bucket in buckets:
            args += [bucket.limit, bucket.window_s * 1000]
        reply = await self._admit(keys=[slots_key, *(b.key for b in buckets)], args=args)
        return _admission(int(reply[0]), buckets, [int(n) for n in reply[1:]], slot)

    async def release(self, slots_key: str, slot: str) -> None:
        await self.client.zrem(slots_key, slot)

    async def ping(self) -> None:
        await self.client.ping()

    async def close(self) -> None:
        await self.client.aclose()


class LocalLimiter:
    """The same decisions for one process (no await inside, so each step is atomic)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self._clock = clock
        self._tats: dict[str, float] = {}
        self._slots: dict[str, dict[str, float]] = {}

    async def admit(
        self, slots_key: str, max_concurrent: int, slot_ttl_s: float, buckets: list[Bucket]
    ) -> Admission:
        now = self._clock() * 1000
        slots = {s: exp for s, exp in self._slots.get(slots_key, {}).items() if exp > now}
        self._slots[slots_key] = slots
        code = 2 if len(slots) >= max_concurrent else 1
        numbers: list[int] = []
        tats: list[float] = []
        denied = False
        for bucket in buckets:
            window = bucket.window_s * 1000
            interval = window / bucket.limit
            tat = max(self._tats.get(bucket.key, now), now)
            # How far the bucket is ahead of now. Differences of `now` only: adding and
            # subtracting a window to a large clock reading can round across a boundary
            # (a fresh limit-1 bucket refused, a remaining count one short).
            ahead = tat - now
            if ahead > window - interval:
                denied = True
                tats.append(tat)
                numbers += [0, math.ceil(ahead + interval - window)]
            else:
                tats.append(tat + interval)
                numbers += [math.floor((window - interval - ahead) / interval), 0]
            numbers.append(math.ceil(tats[-1] - now))
        if denied:
            code = 0
        slot = secrets.token_hex(8)
        if code == 1:
            self._tats.update({b.key: tat for b, tat in zip(buckets, tats, strict=True)})
            slots[slot] = now + slot_ttl_s * 1000
        return _admission(code, buckets, numbers, slot)

    async def release(self, slots_key: str, slot: str) -> None:
        self._slots.get(slots_key, {}).pop(slot, None)

    async def close(self) -> None:
        return None


def rate_limit_headers(states: tuple[BucketState, ...]) -> dict[str, str]:
    """`RateLimit-Policy` and `RateLimit` as draft-ietf-httpapi-ratelimit-headers writes them."""
    if not states:
        return {}
    policy = ", ".join(
        f'"{s.bucket.name}";q={s.bucket.limit};w={s.bucket.window_s}' for s in states
    )
    current = ", ".join(f'"{s.bucket.name}";r={s.remaining};t={s.reset_s}' for s in states)
    return {"RateLimit-Policy": policy, "RateLimit": current}
