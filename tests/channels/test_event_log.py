"""The event log on real PostgreSQL: gapless per-channel seqs under concurrency, events only for
what commits (savepoints included), replay, retention, revocations, and the outbox relay."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import orjson
import pytest
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine

from channels import envelope, events, outbox
from channels.brokers import BrokerUnavailable, MemoryBroker, RedisBroker
from channels.events import ChannelState
from channels.metrics import Metrics
from channels.outbox import Committed
from channels.relay import Relay
from server.config import to_asyncpg_url
from tests.procs import free_port

Maker = async_sessionmaker[AsyncSession]


class Sink:
    """Collects what the outbox hands over after each commit, in the order it is handed over."""

    def __init__(self) -> None:
        self.batches: list[list[Committed]] = []

    def committed(self, items: list[Committed]) -> None:
        self.batches.append(list(items))

    @property
    def items(self) -> list[Committed]:
        return [item for batch in self.batches for item in batch]

    def seqs(self, channel: str) -> list[int]:
        """Seqs of `channel`'s events, in hand-over order."""
        return [
            i.event.seq
            for i in self.items
            if i.event is not None and i.event.seq is not None and i.channel == channel
        ]

    def names(self) -> list[str]:
        return [i.event.event for i in self.items if i.event is not None]


class DroppingSink:
    """A process that dies between commit and publish: nothing is handed to the broker."""

    def committed(self, items: list[Committed]) -> None:
        pass


@pytest.fixture
async def maker(db: str) -> AsyncIterator[Maker]:
    engine = create_async_engine(to_asyncpg_url(db), pool_size=10, max_overflow=40)
    yield async_sessionmaker(engine, expire_on_commit=False)
    await engine.dispose()


@pytest.fixture
def sink() -> Sink:
    return Sink()


@asynccontextmanager
async def bound(maker: Maker, sink: outbox.Sink) -> AsyncIterator[AsyncSession]:
    async with maker() as session:
        outbox.bind(session, sink)
        yield session


async def stored(conn: asyncpg.Connection, channel: str) -> list[tuple[int, str, Any]]:
    rows = await conn.fetch(
        "SELECT seq, event, data FROM events WHERE channel = $1 ORDER BY seq", channel
    )
    return [(r["seq"], r["event"], orjson.loads(r["data"])) for r in rows]


async def state(maker: Maker, channel: str) -> ChannelState:
    async with maker() as session:
        return await events.state(session, channel)


# Seqs ------------------------------------------------------------------------------------------


async def test_seqs_start_at_1_and_have_no_gaps(
    maker: Maker, sink: Sink, db_conn: asyncpg.Connection
) -> None:
    async with bound(maker, sink) as s:
        first = [await events.append(s, "ride:1", "ride.updated", {"n": n}) for n in range(3)]
        assert [e.seq for e in first] == [1, 2, 3]
        assert sink.items == []  # nothing is handed over before commit
        await s.commit()
        more = [await events.append(s, "ride:1", "ride.updated", {"n": n}) for n in (3, 4)]
        await s.commit()

    assert [e.seq for e in more] == [4, 5]
    assert sink.seqs("ride:1") == [1, 2, 3, 4, 5]
    assert [len(b) for b in sink.batches] == [3, 2]  # one hand-over per commit
    assert await stored(db_conn, "ride:1") == [(n + 1, "ride.updated", {"n": n}) for n in range(5)]
    ids = {r["seq"]: r["id"] for r in await db_conn.fetch("SELECT id, seq FROM events")}
    assert [(i.event_id, i.acl) for i in sink.items] == [(ids[n], 0) for n in range(1, 6)]
    event = sink.items[0].event
    assert event is not None
    assert (event.channel, event.event, event.data, event.at.tzinfo is not None) == (
        "ride:1",
        "ride.updated",
        {"n": 0},
        True,
    )
    assert await state(maker, "ride:1") == ChannelState(head=5, trimmed=0, acl=0)


async def test_at_never_goes_back_along_a_channels_seqs(
    maker: Maker, sink: Sink, db_conn: asyncpg.Connection
) -> None:
    """A transaction that began first but appended last gets the later seq, and its event's
    `at` must not be earlier than the one before it (`at` is the append's moment, not the
    transaction's start): a client sorting by seq sees time move forward."""
    async with bound(maker, sink) as early, bound(maker, sink) as late:
        await early.execute(text("SELECT 1"))  # `early`'s transaction starts here
        await asyncio.sleep(0.05)
        first = await events.append(late, "ride:7", "ride.updated", {"by": "late"})
        await late.commit()
        second = await events.append(early, "ride:7", "ride.updated", {"by": "early"})
        await early.commit()
    assert (first.seq, second.seq) == (1, 2)
    assert second.at >= first.at
    query = "SELECT created_at FROM events WHERE channel = 'ride:7' ORDER BY seq"
    rows = await db_conn.fetch(query)
    assert [r["created_at"] for r in rows] == [first.at, second.at]


async def test_channels_have_independent_seqs(maker: Maker, sink: Sink) -> None:
    async with bound(maker, sink) as s:
        for channel in ["ride:1", "user:1", "ride:1", "ride:2", "user:1", "ride:1"]:
            await events.append(s, channel, "e", {})
        await s.commit()
    assert sink.seqs("ride:1") == [1, 2, 3]
    assert sink.seqs("user:1") == [1, 2]
    assert sink.seqs("ride:2") == [1]
    assert (await state(maker, "user:1")).head == 2
    assert await state(maker, "nobody:1") == ChannelState(head=0, trimmed=0, acl=0)


async def test_append_many_continues_each_channels_seqs_in_the_order_given(
    maker: Maker, sink: Sink, db_conn: asyncpg.Connection
) -> None:
    async with bound(maker, sink) as s:
        await events.append(s, "user:1", "e", {"n": 0})
        await events.revoke(s, "user:2", 7)
        await s.commit()
        batch = [
            ("user:1", "a", {"n": 1}),
            ("user:2", "b", {"n": 2}),
            ("user:1", "c", {"n": 3}),
            ("ride:9", "d", {"n": 4}),
            ("user:1", "e", {"n": 5}),
        ]
        appended = await events.append_many(s, batch)
        assert await events.append_many(s, []) == []
        await s.commit()
    assert [(e.channel, e.event, e.data, e.seq) for e in appended] == [
        ("user:1", "a", {"n": 1}, 2),
        ("user:2", "b", {"n": 2}, 1),
        ("user:1", "c", {"n": 3}, 3),
        ("ride:9", "d", {"n": 4}, 1),
        ("user:1", "e", {"n": 5}, 4),
    ]
    assert [(i.channel, i.event.seq if i.event else None) for i in sink.batches[-1]] == [
        (e.channel, e.seq) for e in appended
    ]  # handed over in the order given
    assert [i.acl for i in sink.batches[-1]] == [0, 1, 0, 0, 0]  # user:2 was revoked once
    assert await stored(db_conn, "user:1") == [
        (1, "e", {"n": 0}), (2, "a", {"n": 1}), (3, "c", {"n": 3}), (4, "e", {"n": 5})
    ]  # fmt: skip
    assert (await state(maker, "user:2")).head == 1


async def test_append_many_and_append_race_without_gaps_or_deadlocks(
    maker: Maker, sink: Sink, db_conn: asyncpg.Connection
) -> None:
    channels = [f"user:{n}" for n in range(6)]

    async def writer(n: int) -> None:
        async with bound(maker, sink) as s:
            if n % 2:
                mine = channels[n % 3 :] + channels[::-1]
                await events.append_many(s, [(c, "many", {"w": n}) for c in mine])
            else:
                await events.lock_channels(s, channels[n % 4 :])
                for c in channels[n % 4 :]:
                    await events.append(s, c, "one", {"w": n})
            await s.commit()

    await asyncio.gather(*(writer(n) for n in range(16)))
    for channel in channels:
        seqs = [r["seq"] for r in await db_conn.fetch(
            "SELECT seq FROM events WHERE channel = $1 ORDER BY seq", channel
        )]  # fmt: skip
        assert seqs == list(range(1, len(seqs) + 1))
        assert sorted(sink.seqs(channel)) == seqs


async def test_concurrent_writers_get_each_seq_exactly_once(
    maker: Maker, sink: Sink, db_conn: asyncpg.Connection
) -> None:
    # Seqs follow commit order in PostgreSQL, but each session learns of its own commit over its
    # own connection: the hand-over order across sessions is not guaranteed to be seq order
    # (observed: 39 before 38), which is why the hub reorders and gap-fills. So this checks that
    # each seq is handed over exactly once, not the order of hand-overs.
    async def writer(n: int) -> int:
        async with bound(maker, sink) as s:
            event = await events.append(s, "ride:hot", "booking.confirmed", {"writer": n})
            if n % 4 == 0:
                await asyncio.sleep(0.01)  # hold the channel a little longer before committing
            await s.commit()
        assert event.seq is not None
        return event.seq

    seqs = await asyncio.gather(*(writer(n) for n in range(50)))

    assert sorted(seqs) == list(range(1, 51))
    assert sorted(sink.seqs("ride:hot")) == list(range(1, 51))
    assert [len(batch) for batch in sink.batches] == [1] * 50  # one hand-over per commit
    rows = await stored(db_conn, "ride:hot")
    assert [seq for seq, _, _ in rows] == list(range(1, 51))
    assert {data["writer"]: seq for seq, _, data in rows} == dict(enumerate(seqs))
    assert (await state(maker, "ride:hot")).head == 50


async def test_concurrent_writers_on_many_channels(maker: Maker, sink: Sink) -> None:
    channels = [f"user:{n}" for n in range(5)]

    async def writer(n: int) -> None:
        async with bound(maker, sink) as s:
            await events.append(s, channels[n % 5], "e", {"n": n})
            await events.append(s, "ride:shared", "e", {"n": n})
            await s.commit()

    await asyncio.gather(*(writer(n) for n in range(40)))
    for channel in channels:
        assert sorted(sink.seqs(channel)) == list(range(1, 9))
    assert sorted(sink.seqs("ride:shared")) == list(range(1, 41))
    # each commit hands over its own two events, together
    batches = [[(i.channel, i.event.data if i.event else None) for i in b] for b in sink.batches]
    assert sorted(batches, key=lambda b: b[0][1]["n"] if b[0][1] else -1) == [
        [(channels[n % 5], {"n": n}), ("ride:shared", {"n": n})] for n in range(40)
    ]


# Only what commits -----------------------------------------------------------------------------


async def test_a_rolled_back_transaction_leaves_no_event(
    maker: Maker, sink: Sink, db_conn: asyncpg.Connection
) -> None:
    async with bound(maker, sink) as s:
        await events.append(s, "ride:1", "ride.updated", {"n": 1})
        await events.append(s, "ride:1", "ride.updated", {"n": 2})
        await s.rollback()
        assert sink.items == []
        assert await stored(db_conn, "ride:1") == []
        assert await state(maker, "ride:1") == ChannelState(head=0, trimmed=0, acl=0)

        # the next transaction of the same session starts again at 1
        await events.append(s, "ride:1", "ride.updated", {"n": 3})
        await s.commit()
    assert sink.seqs("ride:1") == [1]
    assert await stored(db_conn, "ride:1") == [(1, "ride.updated", {"n": 3})]


async def test_an_exception_in_a_transaction_block_publishes_nothing(
    maker: Maker, sink: Sink, db_conn: asyncpg.Connection
) -> None:
    with pytest.raises(RuntimeError, match="refused"):
        async with bound(maker, sink) as s, s.begin():
            await events.append(s, "ride:1", "ride.updated", {})
            raise RuntimeError("refused")
    assert sink.items == []
    assert await stored(db_conn, "ride:1") == []


async def test_closing_a_session_forgets_its_uncommitted_events(
    maker: Maker, sink: Sink, db_conn: asyncpg.Connection
) -> None:
    # Fixed regression: channels/outbox.py forgets pending events only in `after_soft_rollback`.
    # Closing a
    # session with its transaction open (`AsyncSession.close()`, also what `async with maker()`
    # does on the way out) rolls the transaction back WITHOUT firing `after_soft_rollback`, so
    # the rolled-back events stay in `session.info["kuda.pending"]`. SQLAlchemy lets a closed
    # session be used again; its next commit hands the phantom events to the publisher: here a
    # `first` event (seq 1, an id that no row has) that rolled back, next to the real seq 1.
    # Subscribers would get an event for a change that never happened, and hubs deduplicating
    # by seq would then drop the real seq 1. (Fix: also clear pending items of the transaction
    # in `after_transaction_end` when it did not commit.)
    session = maker()
    outbox.bind(session, sink)
    try:
        await events.append(session, "ride:1", "first", {})
        await session.close()  # the transaction rolls back
        await events.append(session, "ride:1", "second", {})
        await session.commit()
    finally:
        await session.close()
    assert await stored(db_conn, "ride:1") == [(1, "second", {})]
    assert [(i.event.seq, i.event.event) for i in sink.items if i.event] == [(1, "second")]


async def test_a_rolled_back_savepoint_drops_only_its_events(
    maker: Maker, sink: Sink, db_conn: asyncpg.Connection
) -> None:
    async with bound(maker, sink) as s:
        await events.append(s, "ride:1", "outer", {"n": 1})
        savepoint = await s.begin_nested()
        await events.append(s, "ride:1", "inner", {"n": 2})
        await events.append(s, "user:9", "inner", {"n": 3})
        await savepoint.rollback()
        # the seq counter was rolled back too: no gap
        assert (await events.append(s, "ride:1", "outer", {"n": 4})).seq == 2
        await s.commit()

    assert sink.names() == ["outer", "outer"]
    assert sink.seqs("ride:1") == [1, 2]
    assert await stored(db_conn, "ride:1") == [(1, "outer", {"n": 1}), (2, "outer", {"n": 4})]
    assert await stored(db_conn, "user:9") == []
    assert await state(maker, "user:9") == ChannelState(head=0, trimmed=0, acl=0)


async def test_a_savepoint_block_that_raises_drops_only_its_events(
    maker: Maker, sink: Sink
) -> None:
    async with bound(maker, sink) as s:
        await events.append(s, "ride:1", "outer", {})
        with pytest.raises(ValueError, match="no seats"):
            async with s.begin_nested():
                await events.append(s, "ride:1", "inner", {})
                raise ValueError("no seats")
        await events.append(s, "ride:1", "outer", {})
        await s.commit()
    assert sink.names() == ["outer", "outer"]
    assert sink.seqs("ride:1") == [1, 2]


async def test_a_released_savepoint_keeps_its_events(maker: Maker, sink: Sink) -> None:
    async with bound(maker, sink) as s:
        await events.append(s, "ride:1", "outer", {})
        async with s.begin_nested():
            await events.append(s, "ride:1", "inner", {})
        await events.append(s, "ride:1", "after", {})
        await s.commit()
    assert sink.names() == ["outer", "inner", "after"]
    assert sink.seqs("ride:1") == [1, 2, 3]


# Fixed regression: SQLAlchemy dispatches `after_commit` when a SAVEPOINT is released, not only when
# the
# outermost transaction commits (orm/session.py SessionTransaction.commit: `if self._parent is
# None or self.nested: ... dispatch.after_commit`). channels/outbox.py `_after_commit` does not
# check for that, so releasing a savepoint hands every event pending in the session (the outer
# transaction's too) to the publisher while the transaction is still open. The publisher sends
# them to subscribers at once: before the change is visible to anyone else, and even when the
# transaction then rolls back (events for changes that never happened, with seqs that the next
# real events reuse). Fix: ignore `after_commit` while `session.in_nested_transaction()`.


async def test_releasing_a_savepoint_hands_over_nothing_before_commit(
    maker: Maker, sink: Sink
) -> None:
    # Fixed regression: see above; the sink already holds `outer` and `inner` before the commit.
    async with bound(maker, sink) as s:
        await events.append(s, "ride:1", "outer", {})
        async with s.begin_nested():
            await events.append(s, "ride:1", "inner", {})
        assert sink.items == []
        await s.commit()
    assert sink.names() == ["outer", "inner"]


async def test_nested_savepoints_roll_back_with_their_parent(
    maker: Maker, sink: Sink, db_conn: asyncpg.Connection
) -> None:
    # Fixed regression: see above; releasing `inner` publishes `kept`, `dropped`, `dropped` at once.
    async with bound(maker, sink) as s:
        await events.append(s, "ride:1", "kept", {})
        outer = await s.begin_nested()
        await events.append(s, "ride:1", "dropped", {})
        inner = await s.begin_nested()
        await events.append(s, "ride:1", "dropped", {})
        await inner.commit()  # released into `outer`...
        await outer.rollback()  # ...which rolls back
        await events.append(s, "ride:1", "kept", {})
        await s.commit()
    assert [seq for seq, _, _ in await stored(db_conn, "ride:1")] == [1, 2]
    assert sink.names() == ["kept", "kept"]


async def test_a_released_savepoint_in_a_rolled_back_transaction_publishes_nothing(
    maker: Maker, sink: Sink, db_conn: asyncpg.Connection
) -> None:
    # Fixed regression: see above; the sink gets seq 1 and 2, which never committed.
    async with bound(maker, sink) as s:
        await events.append(s, "ride:1", "e", {})
        async with s.begin_nested():
            await events.append(s, "ride:1", "e", {})
        await s.rollback()
    assert await stored(db_conn, "ride:1") == []
    assert sink.items == []


# Replay ----------------------------------------------------------------------------------------


async def test_replay_returns_the_requested_range_in_order(maker: Maker, sink: Sink) -> None:
    async with bound(maker, sink) as s:
        for n in range(1, 11):
            await events.append(s, "ride:1", f"e{n}", {"n": n})
            await events.append(s, "ride:2", "other", {"n": n})
        await s.commit()

    async with maker() as s:

        async def seqs(since: int, until: int, limit: int = events.MAX_REPLAY) -> list[int | None]:
            return [e.event.seq for e in await events.replay(s, "ride:1", since, until, limit)]

        assert await seqs(0, 10) == list(range(1, 11))
        assert await seqs(3, 8) == [4, 5, 6, 7, 8]
        assert await seqs(3, 8, limit=2) == [4, 5]
        assert await seqs(8, 100) == [9, 10]
        assert await seqs(10, 10) == []
        assert await seqs(7, 3) == []

        (replayed,) = await events.replay(s, "ride:1", 4, 5)
        assert replayed.acl == 0
        assert (replayed.event.channel, replayed.event.event, replayed.event.data) == (
            "ride:1",
            "e5",
            {"n": 5},
        )
        frame = replayed.event.to_frame()
        assert (frame["type"], frame["seq"], frame["at"].endswith("Z")) == ("event", 5, True)
        assert await events.replay(s, "ride:3", 0, 10) == []


# Retention -------------------------------------------------------------------------------------


async def test_trim_removes_old_events_and_records_the_trimmed_seq(
    maker: Maker, sink: Sink, db_conn: asyncpg.Connection
) -> None:
    async with bound(maker, sink) as s:
        for _ in range(5):
            await events.append(s, "ride:1", "e", {})
        for _ in range(2):
            await events.append(s, "ride:2", "e", {})
        await s.commit()
    await db_conn.execute(
        "UPDATE events SET created_at = created_at - interval '1 hour' "
        "WHERE (channel = 'ride:1' AND seq <= 3) OR (channel = 'ride:2' AND seq = 1)"
    )

    async with maker() as s:
        assert await events.trim(s, keep_s=60) == 4
        await s.commit()
    async with maker() as s:
        assert await events.trim(s, keep_s=60) == 0  # nothing left past retention
        await s.commit()

    assert [seq for seq, _, _ in await stored(db_conn, "ride:1")] == [4, 5]
    assert [seq for seq, _, _ in await stored(db_conn, "ride:2")] == [2]
    ride1 = await state(maker, "ride:1")
    assert ride1 == ChannelState(head=5, trimmed=3, acl=0)
    assert (await state(maker, "ride:2")).trimmed == 1

    # a client that has seq 2 cannot be brought up to date exactly; one that has 3 can
    assert not events.is_recoverable(0, ride1)
    assert not events.is_recoverable(2, ride1)
    assert events.is_recoverable(3, ride1)
    assert events.is_recoverable(5, ride1)
    assert not events.is_recoverable(6, ride1)  # ahead of the head: another history

    # appending continues after the trimmed seqs
    async with bound(maker, sink) as s:
        assert (await events.append(s, "ride:1", "e", {})).seq == 6
        await s.commit()


async def test_trim_keeps_events_inside_retention(
    maker: Maker, sink: Sink, db_conn: asyncpg.Connection
) -> None:
    async with bound(maker, sink) as s:
        await events.append(s, "ride:1", "e", {})
        await s.commit()
    async with maker() as s:
        assert await events.trim(s, keep_s=3600) == 0
        await s.commit()
    assert len(await stored(db_conn, "ride:1")) == 1
    assert (await state(maker, "ride:1")).trimmed == 0


def test_recoverable_only_within_the_replay_limit() -> None:
    state = ChannelState(head=1500, trimmed=0, acl=0)
    assert events.is_recoverable(1500, state)
    assert events.is_recoverable(500, state)  # exactly 1,000 behind
    assert not events.is_recoverable(499, state)
    assert events.is_recoverable(0, ChannelState(head=0, trimmed=0, acl=0))


# Revocations -----------------------------------------------------------------------------------


async def test_revoke_bumps_the_acl_version_of_later_events(
    maker: Maker, sink: Sink, db_conn: asyncpg.Connection
) -> None:
    channel = "ride:5:chat"
    async with bound(maker, sink) as s:
        await events.append(s, channel, "message.created", {"n": 1})
        await s.commit()
        assert await events.revoke(s, channel, user_id=7) == 1
        await s.commit()
        await events.append(s, channel, "message.created", {"n": 2})
        await s.commit()
        assert await events.revoke(s, channel, user_id=8) == 2
        await events.append(s, channel, "message.created", {"n": 3})
        await s.commit()

    assert [(i.event.seq if i.event else None, i.acl, i.channel) for i in sink.items] == [
        (1, 0, channel),
        (None, 1, channel),  # the revocation itself
        (2, 1, channel),
        (None, 2, channel),
        (3, 2, channel),
    ]
    assert all(i.event_id is None for i in sink.items if i.event is None)
    rows = await db_conn.fetch("SELECT seq, acl_version FROM events ORDER BY seq")
    assert [(r["seq"], r["acl_version"]) for r in rows] == [(1, 0), (2, 1), (3, 2)]

    async with maker() as s:
        assert await events.state(s, channel) == ChannelState(head=3, trimmed=0, acl=2)
        assert await events.revocations(s, channel, after=0) == [(1, 7), (2, 8)]
        assert await events.revocations(s, channel, after=1) == [(2, 8)]
        assert await events.revoked_since(s, channel, 0, 7)
        assert not await events.revoked_since(s, channel, 1, 7)
        assert [e.acl for e in await events.replay(s, channel, 0, 3)] == [0, 1, 2]
        assert await events.states(s, [channel, "ride:404"]) == {channel: (3, 2)}


async def test_revoke_on_a_channel_without_events(maker: Maker, sink: Sink) -> None:
    async with bound(maker, sink) as s:
        assert await events.revoke(s, "ride:6:chat", user_id=1) == 1
        await s.commit()
        assert (await events.append(s, "ride:6:chat", "e", {})).seq == 1
        await s.commit()
    assert [(i.event_id is None, i.acl) for i in sink.items] == [(True, 1), (False, 1)]
    assert await state(maker, "ride:6:chat") == ChannelState(head=1, trimmed=0, acl=1)


async def test_a_rolled_back_revocation_changes_nothing(maker: Maker, sink: Sink) -> None:
    async with bound(maker, sink) as s:
        await events.revoke(s, "ride:5:chat", user_id=7)
        await s.rollback()
        await events.append(s, "ride:5:chat", "e", {})
        await s.commit()
    assert [(i.event is not None, i.acl) for i in sink.items] == [(True, 0)]
    async with maker() as s:
        assert await events.revocations(s, "ride:5:chat", after=0) == []


# Relay -----------------------------------------------------------------------------------------


async def unpublished(conn: asyncpg.Connection) -> list[int]:
    rows = await conn.fetch("SELECT seq FROM events WHERE NOT published ORDER BY id")
    return [r["seq"] for r in rows]


async def noop_resync() -> None:
    pass


async def test_relay_publishes_events_that_were_committed_but_never_published(
    maker: Maker, db_conn: asyncpg.Connection
) -> None:
    async with bound(maker, DroppingSink()) as s:
        for n in range(3):
            await events.append(s, "ride:1", "ride.updated", {"n": n})
        await events.append(s, "ride:2", "ride.updated", {"n": 9})
        await s.commit()
    await db_conn.execute("UPDATE events SET created_at = created_at - interval '10 seconds'")

    received: list[tuple[str, bytes]] = []
    broker = MemoryBroker()
    await broker.start(lambda c, m: received.append((c, m)), noop_resync)
    await broker.subscribe("ride:1")
    metrics = Metrics()
    relay = Relay(broker, maker, metrics, grace_s=1)

    assert await relay.relay_once() == 4
    assert [c for c, _ in received] == ["ride:1"] * 3  # ride:2 went out too, unsubscribed here
    decoded = [envelope.decode(m) for _, m in received]
    assert all(isinstance(d, envelope.Durable) for d in decoded)
    durable = [d for d in decoded if isinstance(d, envelope.Durable)]
    assert [(d.seq, d.acl) for d in durable] == [(1, 0), (2, 0), (3, 0)]
    assert all(abs(d.published_at - time.time()) < 3600 for d in durable)
    frames = [orjson.loads(d.payload) for d in durable]
    assert [(f["type"], f["channel"], f["seq"], f["event"], f["data"]) for f in frames] == [
        ("event", "ride:1", n + 1, "ride.updated", {"n": n}) for n in range(3)
    ]

    assert await unpublished(db_conn) == []
    assert await relay.relay_once() == 0
    assert len(received) == 3
    assert metrics.registry.get_sample_value("kuda_events_relayed_total") == 4
    await broker.stop()


async def test_relay_leaves_recent_events_to_the_publisher(
    maker: Maker, db_conn: asyncpg.Connection
) -> None:
    async with bound(maker, DroppingSink()) as s:
        await events.append(s, "ride:1", "e", {})
        await s.commit()
    broker = MemoryBroker()
    await broker.start(lambda c, m: None, noop_resync)
    assert await Relay(broker, maker, Metrics(), grace_s=3600).relay_once() == 0
    assert await unpublished(db_conn) == [1]


async def test_relay_keeps_events_unpublished_while_the_broker_is_down(
    maker: Maker, db_conn: asyncpg.Connection
) -> None:
    async with bound(maker, DroppingSink()) as s:
        await events.append(s, "ride:1", "e", {})
        await s.commit()
    await db_conn.execute("UPDATE events SET created_at = created_at - interval '10 seconds'")

    down = RedisBroker(f"redis://127.0.0.1:{free_port()}/0", "t:")  # nothing listens there
    try:
        with pytest.raises(BrokerUnavailable):
            await Relay(down, maker, Metrics(), grace_s=1).relay_once()
    finally:
        await down.stop()
    assert await unpublished(db_conn) == [1]

    received: list[tuple[str, bytes]] = []
    up = MemoryBroker()
    await up.start(lambda c, m: received.append((c, m)), noop_resync)
    await up.subscribe("ride:1")
    assert await Relay(up, maker, Metrics(), grace_s=1).relay_once() == 1
    assert len(received) == 1
    assert await unpublished(db_conn) == []


# Through the app -------------------------------------------------------------------------------


async def test_the_app_publishes_and_marks_committed_events(
    app: FastAPI, db_conn: asyncpg.Connection
) -> None:
    async with app.state.sessionmaker() as s:
        event = await events.append(s, "user:1", "notification.created", {"id": 1})
        await s.commit()
    assert event.seq == 1
    deadline = time.monotonic() + 10
    while await unpublished(db_conn):
        assert time.monotonic() < deadline, "the publisher never marked the event published"
        await asyncio.sleep(0.02)
    assert await stored(db_conn, "user:1") == [(1, "notification.created", {"id": 1})]
