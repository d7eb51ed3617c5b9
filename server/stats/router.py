"""`GET /api/v1/admin/stats` (PROTOCOL.md section 6, "Live statistics")."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from channels import Realtime
from server.deps import ReadAdminUser, ReadSessionDep
from server.stats import service
from server.stats.schemas import Stats

router = APIRouter(prefix="/api/v1/admin", tags=["admin"])


@router.get("/stats", response_model=Stats)
async def stats(request: Request, _: ReadAdminUser, session: ReadSessionDep) -> dict[str, Any]:
    """Administrators only (401 without a token, 403 for others); 503 when Redis is down."""
    realtime: Realtime = request.app.state.realtime
    return await service.current(session, realtime.roster)
