"""After-commit hand-off of appended events to the publisher.

`track()` remembers, on the session, each event appended in the current transaction (or
savepoint). When the outermost transaction commits, the events go to the `Publisher` registered
on the session's `info`; when a transaction or savepoint rolls back, its events are forgotten,
so a rolled-back change never publishes an event.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session, SessionTransaction

from channels.types import Event

PUBLISHER_KEY = "kuda.publisher"
_PENDING_KEY = "kuda.pending"


@dataclass(frozen=True, slots=True)
class Committed:
    """A committed durable event (`event` set) or revocation (`event` None, `channel` set)."""

    event_id: int | None
    event: Event | None
    acl: int
    channel: str


class Sink(Protocol):
    def committed(self, items: list[Committed]) -> None:
        """Called synchronously right after commit; must not block."""


def bind(session: AsyncSession | Session, sink: Sink) -> None:
    """Route this session's committed events to `sink` (done by the session factory)."""
    target = session.sync_session if isinstance(session, AsyncSession) else session
    target.info[PUBLISHER_KEY] = sink


def track(
    session: AsyncSession,
    event_id: int | None,
    stored: Event | None,
    acl: int,
    *,
    channel: str | None = None,
) -> None:
    sync = session.sync_session
    if PUBLISHER_KEY not in sync.info:
        raise RuntimeError("session is not bound to a publisher (channels.outbox.bind)")
    tx = sync.get_nested_transaction() or sync.get_transaction()
    name = channel if channel is not None else stored.channel if stored else ""
    pending: list[tuple[Any, Committed]] = sync.info.setdefault(_PENDING_KEY, [])
    pending.append((tx, Committed(event_id, stored, acl, name)))


def _descends(tx: SessionTransaction | None, ancestor: SessionTransaction) -> bool:
    while tx is not None:
        if tx is ancestor:
            return True
        tx = tx.parent
    return False


@event.listens_for(Session, "after_commit")
def _after_commit(session: Session) -> None:
    # SQLAlchemy also fires this when a savepoint is released: only the outermost commit
    # makes the events real.
    if session.in_nested_transaction():
        return
    pending = session.info.pop(_PENDING_KEY, None)
    if pending:
        session.info[PUBLISHER_KEY].committed([item for _, item in pending])


@event.listens_for(Session, "after_transaction_end")
def _after_transaction_end(session: Session, transaction: SessionTransaction) -> None:
    # The outermost transaction ended without `after_commit` taking its events: it rolled
    # back (including `close()`, which fires no soft-rollback event). Forget them.
    if transaction.parent is None:
        session.info.pop(_PENDING_KEY, None)


@event.listens_for(Session, "after_soft_rollback")
def _after_rollback(session: Session, previous_transaction: SessionTransaction) -> None:
    pending = session.info.get(_PENDING_KEY)
    if pending:
        kept = [p for p in pending if not _descends(p[0], previous_transaction)]
        session.info[_PENDING_KEY] = kept
