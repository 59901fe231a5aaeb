"""Images of seeded requests kept for an exact repeat. The same model, inputs, schedule,
seeds and output format make the same bytes, so a repeat is answered without the GPU.

Only requests with an explicit seed (a random one is never asked for again) and no
previews are kept, for the models that opt in (`result_cache: true`). The key is a
digest of everything that shapes the images, and of the tenant unless the config shares
results across tenants. Values are JSON (never pickle: the store may be shared). Either
store fails soft: a cache that cannot answer is a miss, never a failed request.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hashlib
import json
import logging
import time
from collections import OrderedDict
from typing import Any, Protocol

import numpy as np

from serve_app import environment
from serve_app.config import AppConfig, ModelConfig, ResultCacheConfig
from serve_app.models.spec import EditSpec, GeneratedImage, GenerationResult, GenerationSpec
from serve_app.observability.metrics import ServiceMetrics

logger = logging.getLogger(__name__)

# Part of every key: raise it when what a key covers changes, and old entries go unused.
KEY_VERSION = 2
# What of a model's config shapes its images (not its limits, batching or warm-up).
MODEL_FIELDS = {"name", "family", "path", "dtype", "custom_weights"}
# Fields of a request that do not change its images.
NOT_IN_KEY = {"job_id", "partial_images"}
# Redis unreachable: said in the log at most this often (each failure is counted).
ERROR_LOG_EVERY_S = 30.0
REDIS_TIMEOUT_S = 0.5


class ResultStore(Protocol):
    async def get(self, key: str) -> bytes | None: ...

    async def put(self, key: str, value: bytes) -> None: ...


def result_key(model: ModelConfig, spec: GenerationSpec | EditSpec, tenant: str | None) -> str:
    """The digest of everything that shapes a request's images (and its tenant, unless
    None: results shared across tenants)."""
    fields = {
        field.name: _canonical(getattr(spec, field.name))
        for field in dataclasses.fields(spec)
        if field.name not in NOT_IN_KEY
    }
    document = {
        "version": KEY_VERSION,
        "model": model.model_dump(mode="json", include=MODEL_FIELDS),
        "kind": type(spec).__name__,
        "request": fields,
        "tenant": tenant,
    }
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _canonical(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        data = np.ascontiguousarray(value)
        digest = hashlib.sha256(data.tobytes()).hexdigest()
        return {"shape": list(data.shape), "dtype": str(data.dtype), "sha256": digest}
    if isinstance(value, tuple | list):
        return [_canonical(item) for item in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        # LoRA adapters: name, source, weight file and scale.
        return {f.name: _canonical(getattr(value, f.name)) for f in dataclasses.fields(value)}
    return value


def encode_result(result: GenerationResult) -> bytes:
    images = [
        {
            "data": base64.b64encode(image.data).decode("ascii"),
            "seed": image.seed,
            "width": image.width,
            "height": image.height,
        }
        for image in result.images
    ]
    return json.dumps({"images": images}, separators=(",", ":")).encode()


def decode_result(value: bytes) -> GenerationResult:
    images = [
        GeneratedImage(
            data=base64.b64decode(item["data"], validate=True),
            seed=int(item["seed"]),
            width=int(item["width"]),
            height=int(item["height"]),
        )
        for item in json.loads(value)["images"]
    ]
    return GenerationResult(images=images, batch_images=0, cache="hit")


class LocalResults:
    """In this replica's memory: oldest stored first out past `max_bytes` or `ttl_s`."""

    def __init__(self, max_bytes: int, ttl_s: float, clock=time.monotonic):
        self.max_bytes = max_bytes
        self.ttl_s = ttl_s
        self.clock = clock
        self.entries: OrderedDict[str, tuple[float, bytes]] = OrderedDict()
        self.used = 0

    async def get(self, key: str) -> bytes | None:
        entry = self.entries.get(key)
        if entry is None:
            return None
        if self.clock() - entry[0] >= self.ttl_s:
            self._forget(key)
            return None
        return entry[1]

    async def put(self, key: str, value: bytes) -> None:
        if key in self.entries:
            self._forget(key)
        self.entries[key] = (self.clock(), value)
        self.used += len(value)
        while self.used > self.max_bytes:
            self._forget(next(iter(self.entries)))

    def _forget(self, key: str) -> None:
        _, value = self.entries.pop(key)
        self.used -= len(value)


# Stores one entry and keeps the whole under its byte bound, atomically. The index (a
# sorted set by time stored) and the sizes (a hash) name every entry this prefix keeps;
# those past their age are dropped first (Redis has expired them or is about to), then
# the oldest until the total fits. Every key shares the prefix's hash tag: one slot.
PUT_SCRIPT = """
local entry, index, sizes, total = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local ttl_ms, max_bytes = tonumber(ARGV[2]), tonumber(ARGV[3])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local function forget(member)
  local size = tonumber(redis.call('HGET', sizes, member) or '0')
  redis.call('HDEL', sizes, member)
  redis.call('ZREM', index, member)
  redis.call('DECRBY', total, size)
  redis.call('DEL', member)
end
for _, member in ipairs(redis.call('ZRANGEBYSCORE', index, '-inf', now - ttl_ms)) do
  forget(member)
end
if redis.call('HEXISTS', sizes, entry) == 1 then
  forget(entry)
end
local size = string.len(ARGV[1])
redis.call('SET', entry, ARGV[1], 'PX', ttl_ms)
redis.call('ZADD', index, now, entry)
redis.call('HSET', sizes, entry, size)
local used = redis.call('INCRBY', total, size)
while used > max_bytes do
  local oldest = redis.call('ZRANGE', index, 0, 0)[1]
  if not oldest then
    break
  end
  forget(oldest)
  used = tonumber(redis.call('GET', total))
end
return used
"""


class RedisResults:
    """In Redis, shared by every Gateway and JobRunner replica."""

    def __init__(self, url: str, prefix: str, max_bytes: int, ttl_s: float):
        import redis.asyncio as redis

        self.client = redis.Redis.from_url(
            url, socket_timeout=REDIS_TIMEOUT_S, socket_connect_timeout=REDIS_TIMEOUT_S
        )
        self._put = self.client.register_script(PUT_SCRIPT)
        tag = "{" + prefix + "}"
        self.entry_prefix = f"{tag}:entry:"
        self.index, self.sizes, self.total = f"{tag}:index", f"{tag}:sizes", f"{tag}:bytes"
        self.max_bytes = max_bytes
        self.ttl_ms = max(1, round(ttl_s * 1000))

    async def get(self, key: str) -> bytes | None:
        return await self.client.get(self.entry_prefix + key)

    async def put(self, key: str, value: bytes) -> None:
        keys = [self.entry_prefix + key, self.index, self.sizes, self.total]
        await self._put(keys=keys, args=[value, self.ttl_ms, self.max_bytes])


class ResultCache:
    """What the image service asks: the key of a request (None when it is not kept), and
    the stored result for a key; counts hits, misses and failures per model."""

    def __init__(self, config: ResultCacheConfig, store: ResultStore, metrics: ServiceMetrics):
        self.config = config
        self.store = store
        self.metrics = metrics
        self._last_error_log = -ERROR_LOG_EVERY_S

    @classmethod
    def from_config(cls, config: AppConfig, metrics: ServiceMetrics) -> ResultCache:
        settings = config.result_cache
        url = environment.redis_url(config.rate_limits.redis_url)
        store: ResultStore = (
            RedisResults(url, settings.key_prefix, settings.max_bytes, settings.ttl_s)
            if url
            else LocalResults(settings.max_bytes, settings.ttl_s)
        )
        return cls(settings, store, metrics)

    def key_for(
        self, model: ModelConfig, spec: GenerationSpec | EditSpec, seeded: bool, tenant: str
    ) -> str | None:
        if not (model.result_cache and seeded and spec.partial_images == 0):
            return None
        return result_key(model, spec, None if self.config.across_tenants else tenant)

    async def get(self, model: ModelConfig, key: str) -> GenerationResult | None:
        try:
            value = await self.store.get(key)
            result = decode_result(value) if value is not None else None
        except Exception as error:  # unreachable, or an entry that does not decode
            self._failed(model, "read", error)
            return None
        self.metrics.result_cache(model.name, "hit" if result is not None else "miss")
        return result

    async def put(self, model: ModelConfig, key: str, result: GenerationResult) -> None:
        value = await asyncio.to_thread(encode_result, result)
        if len(value) > self.config.max_entry_bytes:
            self.metrics.result_cache(model.name, "too_large")
            return
        try:
            await self.store.put(key, value)
        except Exception as error:
            self._failed(model, "write", error)
            return
        self.metrics.result_cache(model.name, "stored")

    def _failed(self, model: ModelConfig, action: str, error: Exception) -> None:
        self.metrics.result_cache(model.name, "error")
        now = time.monotonic()
        if now - self._last_error_log >= ERROR_LOG_EVERY_S:
            self._last_error_log = now
            logger.warning(
                "result cache %s failed (%s: %s); answering without it",
                action,
                type(error).__name__,
                error,
            )
