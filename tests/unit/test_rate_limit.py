"""Tenant quotas: the in-process limiter and the Redis one (a real server on 127.0.0.1)
make the same decisions."""

from __future__ import annotations

import asyncio

import pytest

from serve_app.security.rate_limit import (
    Bucket,
    LocalLimiter,
    RedisLimiter,
    rate_limit_headers,
)
from tests.security_fixtures import REDIS_URL, closed_port, fresh_redis_prefix


@pytest.fixture(params=["local", "redis"])
async def limiter_and_prefix(request):
    with fresh_redis_prefix() as prefix:
        # A generous timeout: a loaded test machine is not a Redis outage.
        limiter = LocalLimiter() if request.param == "local" else RedisLimiter(REDIS_URL, 10)
        yield limiter, prefix
        await limiter.close()


async def test_a_burst_spends_the_minute_then_is_refused_with_a_retry_hint(limiter_and_prefix):
    limiter, prefix = limiter_and_prefix
    bucket = Bucket("tenant", f"{prefix}:rate", limit=5)
    results = [await limiter.admit(f"{prefix}:slots", 100, 60, [bucket]) for _ in range(8)]
    statuses = [r.status for r in results]
    assert statuses == ["admitted"] * 5 + ["rate_limited"] * 3
    assert [r.buckets[0].remaining for r in results[:5]] == [4, 3, 2, 1, 0]
    refused = results[-1]
    # One request comes back every 60/5 = 12 s.
    assert 1 <= refused.retry_after_s <= 12 and refused.slot is None
    for admitted in results[:5]:
        await limiter.release(f"{prefix}:slots", admitted.slot)


async def test_tenants_have_separate_buckets(limiter_and_prefix):
    limiter, prefix = limiter_and_prefix
    for tenant in ("a", "b"):
        bucket = Bucket("tenant", f"{prefix}:{tenant}:rate", limit=1)
        assert (await limiter.admit(f"{prefix}:{tenant}:s", 9, 60, [bucket])).status == "admitted"
        assert (await limiter.admit(f"{prefix}:{tenant}:s", 9, 60, [bucket])).status != "admitted"


async def test_a_key_bucket_inside_the_tenant_bucket_spends_both_or_neither(limiter_and_prefix):
    limiter, prefix = limiter_and_prefix
    tenant = Bucket("tenant", f"{prefix}:rate", limit=10)
    key = Bucket("key", f"{prefix}:key", limit=2)
    results = [await limiter.admit(f"{prefix}:s", 100, 60, [tenant, key]) for _ in range(4)]
    assert [r.status for r in results] == ["admitted"] * 2 + ["rate_limited"] * 2
    # Refusals spent nothing from the tenant's bucket.
    assert results[-1].buckets[0].remaining == 8
    headers = rate_limit_headers(results[0].buckets)
    assert headers["RateLimit-Policy"] == '"tenant";q=10;w=60, "key";q=2;w=60'
    assert (
        headers["RateLimit"].startswith('"tenant";r=9;t=')
        and '"key";r=1;t=' in headers["RateLimit"]
    )


async def test_in_flight_slots_are_capped_and_given_back(limiter_and_prefix):
    limiter, prefix = limiter_and_prefix
    bucket = Bucket("tenant", f"{prefix}:rate", limit=100)
    slots = f"{prefix}:slots"
    first = await limiter.admit(slots, 2, 60, [bucket])
    second = await limiter.admit(slots, 2, 60, [bucket])
    third = await limiter.admit(slots, 2, 60, [bucket])
    assert (first.status, second.status, third.status) == (
        "admitted",
        "admitted",
        "concurrency_limited",
    )
    assert third.retry_after_s == 1
    # A refused request spent nothing: remaining still counts only the two admitted.
    assert third.buckets[0].remaining == 98
    await limiter.release(slots, first.slot)
    assert (await limiter.admit(slots, 2, 60, [bucket])).status == "admitted"


async def test_slots_of_a_crashed_replica_free_themselves(limiter_and_prefix):
    limiter, prefix = limiter_and_prefix
    bucket = Bucket("tenant", f"{prefix}:rate", limit=100)
    slots = f"{prefix}:slots"
    # Never released, as when the replica holding them dies.
    assert (await limiter.admit(slots, 1, 0.2, [bucket])).status == "admitted"
    assert (await limiter.admit(slots, 1, 0.2, [bucket])).status == "concurrency_limited"
    await asyncio.sleep(0.4)
    assert (await limiter.admit(slots, 1, 0.2, [bucket])).status == "admitted"


async def test_redis_unreachable_raises_for_the_guard_to_decide():
    limiter = RedisLimiter(f"redis://127.0.0.1:{closed_port()}/0", timeout_s=0.5)
    with pytest.raises(Exception) as raised:
        await limiter.admit("x:slots", 1, 1, [Bucket("tenant", "x:rate", 1)])
    assert "connect" in str(raised.value).lower() or isinstance(raised.value, OSError)
    await limiter.close()


async def test_the_local_limiter_does_not_round_across_a_boundary():
    # At this clock reading (s), now + 60 s - 60 s in milliseconds rounds above now: the
    # old arithmetic refused a fresh limit-1 bucket.
    limiter = LocalLimiter(clock=lambda: 33504.988)
    fresh = Bucket("tenant", "one-a-minute", limit=1)
    assert (await limiter.admit("slots", 9, 60, [fresh])).status == "admitted"
    assert (await limiter.admit("slots", 9, 60, [fresh])).status == "rate_limited"
