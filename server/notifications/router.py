from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from server import channel_names, snapshot
from server.deps import CurrentUser, SessionDep, UserId
from server.notifications import service
from server.notifications.schemas import NotificationOut, NotificationPage, ReadAll, UnreadCount
from server.snapshot import SnapshotSessionDep
from server.validation import PathId

router = APIRouter(prefix="/api/v1/notifications", tags=["notifications"])


@router.get("", response_model=NotificationPage)
async def list_notifications(
    response: Response,
    user_id: UserId,
    session: SnapshotSessionDep,
    unread: bool = False,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 50,
) -> NotificationPage:
    """Newest first. `Kuda-Seq` is the head seq of `user:{me}` as of this read."""
    await snapshot.begin(session)
    page = await service.list_for(session, user_id, unread, cursor, limit)
    snapshot.fence(response, await snapshot.head(session, channel_names.user(user_id)))
    items = [NotificationOut.model_validate(n) for n in page.items]
    return NotificationPage(items=items, next_cursor=page.next_cursor)


@router.get("/unread-count", response_model=UnreadCount)
async def unread_count(
    response: Response, user_id: UserId, session: SnapshotSessionDep
) -> UnreadCount:
    """`Kuda-Seq` is the head seq of `user:{me}` as of this count: each `notification.created`
    with a higher seq is one more unread."""
    await snapshot.begin(session)
    count = await service.unread_count(session, user_id)
    snapshot.fence(response, await snapshot.head(session, channel_names.user(user_id)))
    return UnreadCount(unread=count)


@router.post("/read-all", response_model=ReadAll)
async def read_all(user: CurrentUser, session: SessionDep) -> ReadAll:
    return ReadAll(updated=await service.mark_all_read(session, user.id))


@router.post("/{notification_id}/read", response_model=NotificationOut)
async def read(notification_id: PathId, user: CurrentUser, session: SessionDep) -> NotificationOut:
    note = await service.mark_read(session, user.id, notification_id)
    return NotificationOut.model_validate(note)
