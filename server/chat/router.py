"""Ride chat over REST: `/api/v1/rides/{id}/messages` (members only)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import JSONResponse

from server import channel_names, idempotency, snapshot
from server.chat import service
from server.chat.schemas import MessageIn, MessageOut, MessagePage
from server.chat.service import message_view
from server.deps import IdempotencyKey, SessionDep, UserId, creating
from server.pagination import decode_id_cursor
from server.snapshot import SnapshotSessionDep
from server.validation import MAX_ID, PathId

router = APIRouter(prefix="/api/v1/rides", tags=["chat"])


@router.get("/{ride_id}/messages", response_model=MessagePage, response_model_exclude_unset=True)
async def messages(
    ride_id: PathId,
    response: Response,
    user_id: UserId,
    session: SnapshotSessionDep,
    before: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 50,
) -> dict[str, Any]:
    """Newest first; page back with `before=<oldest id seen>` or `cursor=<next_cursor>`.
    `Kuda-Seq` is the head seq of `ride:{id}:chat` as of this read."""
    if cursor is not None:
        before = min(before or MAX_ID, decode_id_cursor(cursor))
    await snapshot.begin(session)
    page = await service.history(session, user_id, ride_id, before, limit)
    snapshot.fence(response, await snapshot.head(session, channel_names.chat(ride_id)))
    return {"items": [message_view(m) for m in page.items], "next_cursor": page.next_cursor}


@creating(router, "/{ride_id}/messages", MessageOut)
async def post_message(
    ride_id: PathId,
    data: MessageIn,
    request: Request,
    user_id: UserId,
    session: SessionDep,
    key: IdempotencyKey = None,
) -> JSONResponse:
    # The caller's id is all a message needs (membership is checked against the ride): no
    # account read per message. A deleted account's sessions are ended (D26), so its token is
    # refused before this runs.
    return await idempotency.create(
        session,
        user_id,
        key,
        request,
        data,
        lambda: service.post(session, user_id, ride_id, data.body, data.client_id),
    )
