"""ReadReplica's choices against real PostgreSQL (the shared server): a replica that refuses
connections is skipped for DB_REPLICA_RETRY_S, one that only cancelled a statement is tried again
at once, and a NotFound from it is asked again of the primary. The streaming-replica behaviour
end to end is tests/faults/test_read_replica.py."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from server.config import Settings
from server.db import create_engine, create_read_sessionmaker
from server.errors import NotFound
from server.replica import ReadReplica
from tests.procs import free_port


async def _port(session: AsyncSession) -> int:
    return int((await session.execute(text("SELECT inet_server_port()"))).scalar_one())


async def test_a_refusing_replica_is_skipped_and_the_primary_answers(
    settings_factory: Callable[..., Settings],
) -> None:
    settings = settings_factory(db_connect_timeout_s=2)
    primary = create_engine(settings)
    nowhere = f"postgresql+asyncpg://postgres@127.0.0.1:{free_port(21500, 21599)}/kuda"
    replica = create_engine(settings, url=nowhere)
    try:
        reads = ReadReplica(
            create_read_sessionmaker(primary), create_read_sessionmaker(replica), retry_s=60
        )
        assert await reads.run(_port) > 0
        assert reads.counts == {"replica": 0, "behind": 0, "down": 1}
        await reads.run(_port)  # skipped: no second connection attempt
        assert reads.counts["down"] == 2
        assert replica.pool.checkedout() == 0
    finally:
        await primary.dispose()
        await replica.dispose()


async def test_a_cancelled_statement_or_a_missing_row_only_sends_that_read_to_the_primary(
    settings_factory: Callable[..., Settings],
) -> None:
    primary = create_engine(settings_factory())
    replica = create_engine(settings_factory(db_statement_timeout_s=0.05))  # cancels pg_sleep
    try:
        reads = ReadReplica(
            create_read_sessionmaker(primary), create_read_sessionmaker(replica), retry_s=60
        )

        async def slow(session: AsyncSession) -> str:
            await session.execute(text("SELECT pg_sleep(0.2)"))
            return "done"

        assert await reads.run(slow) == "done"  # cancelled on the replica, done on the primary
        assert await reads.run(_port) > 0  # the replica is not skipped
        assert reads.counts == {"replica": 1, "behind": 0, "down": 1}

        calls = 0

        async def missing_once(session: AsyncSession) -> int:
            nonlocal calls
            calls += 1
            if calls == 1:
                raise NotFound("User not found")
            return calls

        assert await reads.run(missing_once) == 2
        assert reads.counts["behind"] == 1
    finally:
        await primary.dispose()
        await replica.dispose()
