"""The event log: append durable events inside the caller's transaction; replay since a seq.

Guarantees:
- `append` writes the event in the caller's transaction. A change that commits has its event;
  an event never describes a change that rolled back (savepoints included).
- `seq` is per channel, starts at 1, has no gaps, and follows commit order: appending locks the
  channel's counter row until the transaction ends, so writers of one channel serialize.
- After commit the events are handed to the publisher (see `outbox.py`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import bindparam, text
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.types import String

from channels.outbox import track
from channels.types import Event, JSONObject, utcnow

MAX_REPLAY = 1000

# An event's `at` is the moment it was appended (clock_timestamp()), not its transaction's start
# (now()): appends to one channel are serialized by its counter row, so `at` never goes back
# along a channel's seqs, and it does not count the work its transaction did before the append.
_APPEND = text(
    """
    WITH s AS (
        INSERT INTO channel_seqs AS c (channel, seq) VALUES (:channel, 1)
        ON CONFLICT (channel) DO UPDATE SET seq = c.seq + 1
        RETURNING seq, acl_version
    )
    INSERT INTO events (channel, seq, event, data, acl_version, created_at)
    SELECT :channel, s.seq, :event, :data, s.acl_version, clock_timestamp() FROM s
    RETURNING id, seq, acl_version, created_at
    """
).bindparams(bindparam("data", type_=JSONB))

# Several events at once: each channel's counter moves by its number of events in one upsert
# (rows taken in channel order, as `lock_channels` does), and each event gets the next seq of
# its channel in the order given.
_APPEND_MANY = text(
    """
    WITH req AS (
        SELECT channel, event, data, ord
        FROM unnest(CAST(:channels AS text[]), CAST(:events AS text[]), CAST(:datas AS jsonb[]))
             WITH ORDINALITY AS t(channel, event, data, ord)
    ), n AS (
        SELECT channel, count(*) AS k FROM req GROUP BY channel
    ), s AS (
        INSERT INTO channel_seqs AS c (channel, seq) SELECT channel, k FROM n ORDER BY channel
        ON CONFLICT (channel) DO UPDATE SET seq = c.seq + EXCLUDED.seq
        RETURNING channel, seq, acl_version
    )
    INSERT INTO events (channel, seq, event, data, acl_version, created_at)
    SELECT r.channel, s.seq - n.k + row_number() OVER (PARTITION BY r.channel ORDER BY r.ord),
           r.event, r.data, s.acl_version, clock_timestamp()
    FROM req r JOIN n USING (channel) JOIN s USING (channel)
    ORDER BY r.ord
    RETURNING id, channel, seq, acl_version, created_at
    """
)

_REVOKE = text(
    """
    WITH s AS (
        INSERT INTO channel_seqs AS c (channel, acl_version) VALUES (:channel, 1)
        ON CONFLICT (channel) DO UPDATE SET acl_version = c.acl_version + 1
        RETURNING acl_version
    )
    INSERT INTO channel_revocations (channel, acl_version, user_id)
    SELECT :channel, s.acl_version, :user_id FROM s
    RETURNING acl_version
    """
)

# Counter rows in one global order (by name): created where missing, then locked. Rows are
# inserted in the SELECT's order and locked after ORDER BY, so two transactions that lock
# overlapping sets always queue in the same order and never deadlock on them.
_CREATE_COUNTERS = text(
    """
    INSERT INTO channel_seqs (channel)
    SELECT name FROM unnest(CAST(:channels AS text[])) AS name ORDER BY name
    ON CONFLICT (channel) DO NOTHING
    """
)
_LOCK_COUNTERS = text(
    "SELECT channel FROM channel_seqs WHERE channel = ANY(CAST(:channels AS text[])) "
    "ORDER BY channel FOR UPDATE"
)

_STATE = text("SELECT seq, trimmed_seq, acl_version FROM channel_seqs WHERE channel = :channel")

_STATES = text(
    "SELECT channel, seq, acl_version FROM channel_seqs WHERE channel = ANY(:channels)"
).bindparams(bindparam("channels", type_=ARRAY(String)))

_REPLAY = text(
    """
    SELECT seq, event, data, acl_version, created_at FROM events
    WHERE channel = :channel AND seq > :since AND seq <= :until
    ORDER BY seq LIMIT :limit
    """
)

_REVOCATIONS = text(
    """
    SELECT acl_version, user_id FROM channel_revocations
    WHERE channel = :channel AND acl_version > :after ORDER BY acl_version
    """
)

_REVOKED_SINCE = text(
    """
    SELECT EXISTS (SELECT 1 FROM channel_revocations
    WHERE channel = :channel AND acl_version > :after AND user_id = :user_id)
    """
)

# Retention (`trim`): a batch of the oldest events past the window, their channels' counters
# locked in the global order (as appends lock them), the rows deleted and each channel's
# `trimmed_seq` raised, in one transaction, so `since` below it is never answered as recovered.
_TRIM_PICK = text(
    """
    SELECT id, channel, seq FROM events
    WHERE created_at < now() - make_interval(secs => :keep_s)
    ORDER BY id LIMIT :batch
    """
)
_TRIM_DELETE = text("DELETE FROM events WHERE id = ANY(CAST(:ids AS bigint[]))")
_TRIM_MARK = text(
    """
    UPDATE channel_seqs c SET trimmed_seq = GREATEST(c.trimmed_seq, m.seq)
    FROM unnest(CAST(:channels AS text[]), CAST(:seqs AS bigint[])) AS m(channel, seq)
    WHERE c.channel = m.channel
    """
)


@dataclass(frozen=True, slots=True)
class ChannelState:
    head: int
    trimmed: int
    acl: int


@dataclass(frozen=True, slots=True)
class StoredEvent:
    event: Event
    acl: int


async def append(session: AsyncSession, channel: str, event: str, data: JSONObject) -> Event:
    """Write a durable event in the session's transaction; published after commit."""
    params = {"channel": channel, "event": event, "data": dict(data)}
    row = (await session.execute(_APPEND, params)).one()
    stored = Event(channel=channel, event=event, data=data, at=row.created_at, seq=row.seq)
    track(session, row.id, stored, row.acl_version)
    return stored


async def append_many(
    session: AsyncSession, items: Sequence[tuple[str, str, JSONObject]]
) -> list[Event]:
    """`append` of each (channel, event, data), in that order, in one statement: the same
    guarantees (per-channel seqs without gaps, in the order given, published after commit).
    The counters are taken sorted by channel, so this needs no `lock_channels` first."""
    if not items:
        return []
    params = {
        "channels": [c for c, _, _ in items],
        "events": [e for _, e, _ in items],
        "datas": [orjson.dumps(d).decode() for _, _, d in items],
    }
    rows = sorted((await session.execute(_APPEND_MANY, params)).all(), key=lambda r: r.id)
    stored: list[Event] = []
    for row, (channel, event, data) in zip(rows, items, strict=True):
        assert row.channel == channel  # ids follow the order given (INSERT ... ORDER BY)
        appended = Event(channel=channel, event=event, data=data, at=row.created_at, seq=row.seq)
        track(session, row.id, appended, row.acl_version)
        stored.append(appended)
    return stored


async def lock_channels(session: AsyncSession, channels: Sequence[str]) -> None:
    """Lock the counters of `channels` now, in the one global order (by name).

    `append` and `revoke` lock a channel's counter when they are called, so a transaction that
    appends to several channels would otherwise lock them in call order, and two such
    transactions (a ride cancelled while its passenger books the same driver's next ride) could
    deadlock. A transaction that will append to more than one channel locks them all first with
    this; the appends that follow only wait for nothing."""
    names = sorted(set(channels))
    if len(names) < 2:
        return
    await session.execute(_CREATE_COUNTERS, {"channels": names})
    await session.execute(_LOCK_COUNTERS, {"channels": names})


def publish_after_commit(session: AsyncSession, channel: str, event: str, data: JSONObject) -> None:
    """A live-only event (no seq, never replayed), published only if the transaction commits."""
    track(session, None, Event(channel=channel, event=event, data=data, at=utcnow()), 0)


async def revoke(session: AsyncSession, channel: str, user_id: int) -> int:
    """Record, in the session's transaction, that `user_id` may no longer read `channel`.

    Every instance drops that user's subscriptions to the channel before delivering any event
    committed after this transaction (the revocation bumps the channel's `acl_version`, which
    each later event carries)."""
    acl = int(
        (await session.execute(_REVOKE, {"channel": channel, "user_id": user_id})).scalar_one()
    )
    track(session, None, None, acl, channel=channel)
    return acl


async def state(session: AsyncSession, channel: str) -> ChannelState:
    row = (await session.execute(_STATE, {"channel": channel})).one_or_none()
    if row is None:
        return ChannelState(0, 0, 0)
    return ChannelState(int(row.seq), int(row.trimmed_seq), int(row.acl_version))


async def states(session: AsyncSession, channels: Sequence[str]) -> dict[str, tuple[int, int]]:
    """(head, acl_version) of each channel that has one."""
    rows = await session.execute(_STATES, {"channels": list(channels)})
    return {r.channel: (int(r.seq), int(r.acl_version)) for r in rows}


async def replay(
    session: AsyncSession, channel: str, since: int, until: int, limit: int = MAX_REPLAY
) -> list[StoredEvent]:
    """Events with since < seq <= until, in seq order, at most `limit`."""
    params: dict[str, Any] = {"channel": channel, "since": since, "until": until, "limit": limit}
    rows = await session.execute(_REPLAY, params)
    return [
        StoredEvent(Event(channel, r.event, r.data, r.created_at, int(r.seq)), int(r.acl_version))
        for r in rows
    ]


async def revocations(session: AsyncSession, channel: str, after: int) -> list[tuple[int, int]]:
    """(acl_version, user_id) of revocations newer than `after`."""
    rows = await session.execute(_REVOCATIONS, {"channel": channel, "after": after})
    return [(int(r.acl_version), int(r.user_id)) for r in rows]


async def revoked_since(session: AsyncSession, channel: str, after: int, user_id: int) -> bool:
    params = {"channel": channel, "after": after, "user_id": user_id}
    return bool((await session.execute(_REVOKED_SINCE, params)).scalar_one())


async def trim(session: AsyncSession, keep_s: float, batch: int = 1000) -> int:
    """Delete the oldest events past the retention window (one batch) in the caller's
    transaction; returns how many. Their counters are locked sorted by name first, the order
    appends use, so a trim never deadlocks with an append to several channels; commit soon
    (appends to those channels wait until then)."""
    rows = (await session.execute(_TRIM_PICK, {"keep_s": keep_s, "batch": batch})).all()
    if not rows:
        return 0
    top: dict[str, int] = {}
    for r in rows:
        top[r.channel] = max(top.get(r.channel, 0), int(r.seq))
    names = sorted(top)
    await session.execute(_LOCK_COUNTERS, {"channels": names})
    await session.execute(_TRIM_DELETE, {"ids": [r.id for r in rows]})
    await session.execute(_TRIM_MARK, {"channels": names, "seqs": [top[n] for n in names]})
    return len(rows)


def is_recoverable(since: int, state: ChannelState, max_behind: int = MAX_REPLAY) -> bool:
    """Whether `since` can be replayed exactly: inside retention, not ahead of the head
    (a client from another history), and at most `max_behind` events behind."""
    return state.trimmed <= since <= state.head and state.head - since <= max_behind
