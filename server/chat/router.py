"""Ride chat over REST: `/api/v1/rides/{id}/messages` (members only)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse

from server import idempotency
from server.chat import service
from server.chat.schemas import MessageIn, MessageOut, MessagePage
from server.chat.service import message_view
from server.deps import CurrentUser, IdempotencyKey, ReadSessionDep, SessionDep, UserId
from server.pagination import decode_id_cursor
from server.validation import MAX_ID, PathId

router = APIRouter(prefix="/api/v1/rides", tags=["chat"])

CREATED: dict[int | str, dict[str, Any]] = {201: {"description": "Created"}}


@router.get("/{ride_id}/messages", response_model=MessagePage)
async def messages(
    ride_id: PathId,
    user_id: UserId,
    session: ReadSessionDep,
    before: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 50,
) -> dict[str, Any]:
    """Newest first; page back with `before=<oldest id seen>` or `cursor=<next_cursor>`."""
    if cursor is not None:
        before = min(before or MAX_ID, decode_id_cursor(cursor))
    page = await service.history(session, user_id, ride_id, before, limit)
    return {"items": [message_view(m) for m in page.items], "next_cursor": page.next_cursor}


@router.post("/{ride_id}/messages", status_code=201, response_model=MessageOut, responses=CREATED)
async def post_message(
    ride_id: PathId,
    data: MessageIn,
    request: Request,
    user: CurrentUser,
    session: SessionDep,
    key: IdempotencyKey = None,
) -> JSONResponse:
    return await idempotency.create(
        session,
        user.id,
        key,
        request,
        data,
        lambda: service.post(session, user.id, ride_id, data.body),
    )
