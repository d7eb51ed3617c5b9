from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from redis.asyncio import Redis

from server.auth.tickets import MemoryTicketStore, RedisTicketStore, Ticket

TICKET = Ticket(user_id=7, token_expires_at=datetime(2030, 1, 1, tzinfo=UTC))


async def test_memory_ticket_is_single_use() -> None:
    store = MemoryTicketStore()
    ticket_id = await store.put(TICKET, ttl_s=30)
    assert await store.take(ticket_id) == TICKET
    assert await store.take(ticket_id) is None
    assert await store.take("never-issued") is None


async def test_memory_ticket_expires() -> None:
    store = MemoryTicketStore()
    ticket_id = await store.put(TICKET, ttl_s=1)
    await asyncio.sleep(1.05)
    assert await store.take(ticket_id) is None


async def test_redis_ticket_is_single_use_across_instances(redis: Redis, redis_prefix: str) -> None:
    first, second = RedisTicketStore(redis, redis_prefix), RedisTicketStore(redis, redis_prefix)
    ticket_id = await first.put(TICKET, ttl_s=30)
    assert 0 < await redis.ttl(f"{redis_prefix}wst:{ticket_id}") <= 30
    results = await asyncio.gather(*(s.take(ticket_id) for s in (first, second) * 5))
    assert [r for r in results if r is not None] == [TICKET]
