"""The edge's shared memory, in JetStream key-value buckets with a TTL (the edge itself holds none):
ids of signed-out sessions, and ids of sign-in links and tokens already used."""

from __future__ import annotations

import structlog
from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig, StorageType
from nats.js.errors import BucketNotFoundError, KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from .bus import Unavailable

SIGNED_OUT_SESSIONS = "web_signed_out_sessions"
USED_SIGN_INS = "web_used_sign_ins"

log = structlog.get_logger()


class TtlBucket:
    """Keys that are there or not; each one forgotten `ttl_seconds` after it was written."""

    def __init__(self, kv: KeyValue, name: str) -> None:
        self._kv = kv
        self.name = name

    @classmethod
    async def open(cls, js: JetStreamContext, name: str, ttl_seconds: float, replicas: int = 1) -> TtlBucket:
        """The bucket, created when missing; its TTL raised when an older edge made it shorter."""
        try:
            kv = await js.key_value(name)
        except BucketNotFoundError:
            kv = await js.create_key_value(
                KeyValueConfig(bucket=name, history=1, ttl=ttl_seconds, storage=StorageType.FILE, replicas=replicas)
            )
        stream = await js.stream_info(f"KV_{name}")
        if stream.config.max_age is not None and 0 < stream.config.max_age < ttl_seconds:
            stream.config.max_age = ttl_seconds
            await js.update_stream(stream.config)
            log.info("raised a bucket's TTL", bucket=name, ttl_seconds=ttl_seconds)
        return cls(kv, name)

    async def holds(self, key: str) -> bool:
        try:
            await self._kv.get(key)
        except KeyNotFoundError:
            return False
        except NatsError:
            raise Unavailable(f"the {self.name} bucket") from None
        return True

    async def record(self, key: str) -> None:
        try:
            await self._kv.put(key, b"")
        except NatsError:
            raise Unavailable(f"the {self.name} bucket") from None

    async def claim(self, key: str) -> bool:
        """True for the first claim of `key` (on any edge), False ever after, until the TTL forgets it."""
        try:
            await self._kv.create(key, b"")
        except KeyWrongLastSequenceError:
            return False
        except NatsError:
            raise Unavailable(f"the {self.name} bucket") from None
        return True
