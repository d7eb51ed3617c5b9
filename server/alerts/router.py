"""`/api/v1/alerts`: create, list and delete one's saved searches (PROTOCOL.md section 6)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import JSONResponse

from server import idempotency
from server.alerts import service
from server.alerts.schemas import AlertIn, AlertOut, AlertPage
from server.deps import (
    CurrentUser,
    IdempotencyKey,
    ReadSessionDep,
    SessionDep,
    UserId,
    creating,
)
from server.validation import PathId

router = APIRouter(prefix="/api/v1/alerts", tags=["alerts"])


@creating(router, "", AlertOut)
async def create_alert(
    data: AlertIn,
    request: Request,
    user: CurrentUser,
    session: SessionDep,
    key: IdempotencyKey = None,
) -> JSONResponse:
    """At most 20 per user (409). Honours `Idempotency-Key` like the other creating POSTs."""
    return await idempotency.create(
        session,
        user.id,
        key,
        request,
        data,
        lambda: service.create(session, user.id, data),
        sent_fields_only=True,
    )


@router.get("", response_model=AlertPage)
async def my_alerts(
    user_id: UserId,
    session: ReadSessionDep,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> dict[str, Any]:
    """Mine, newest first."""
    page = await service.mine(session, user_id, cursor, limit)
    return {"items": [service.alert_view(a) for a in page.items], "next_cursor": page.next_cursor}


@router.delete("/{alert_id}", status_code=204, response_class=Response)
async def delete_alert(alert_id: PathId, user_id: UserId, session: SessionDep) -> Response:
    """Someone else's alert, or one that does not exist: 404."""
    await service.remove(session, user_id, alert_id)
    return Response(status_code=204)
