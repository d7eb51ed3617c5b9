"""The live demo at `/`: static files shipped in the package, no build step.

`static/` holds the demo (plain ES modules and CSS). `sdk` is a symbolic link to the JS SDK's
source, `clients/js/src`: the demo imports the SDK from `/static/sdk/`, one copy in the
repository (the wheel gets real files; `tests/test_demo.py` checks what is served equals the
source)."""

from __future__ import annotations

import os
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from starlette.responses import Response
from starlette.types import Scope

HERE = Path(__file__).resolve().parent
STATIC_DIR = HERE / "static"
SDK_DIR = HERE / "sdk"
NO_CACHE = {"Cache-Control": "no-cache"}  # revalidate (ETag): a new release shows at once


class _RevalidatedFiles(StaticFiles):
    """Static files that browsers revalidate on each load instead of caching blindly."""

    def file_response(
        self,
        full_path: str | os.PathLike[str],
        stat_result: os.stat_result,
        scope: Scope,
        status_code: int = 200,
    ) -> Response:
        response = super().file_response(full_path, stat_result, scope, status_code)
        response.headers.update(NO_CACHE)
        return response


def install(app: FastAPI) -> None:
    app.mount("/static/demo", _RevalidatedFiles(directory=STATIC_DIR), name="demo")
    app.mount("/static/sdk", _RevalidatedFiles(directory=SDK_DIR), name="sdk")

    @app.get("/", include_in_schema=False)
    async def demo() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", headers=NO_CACHE)
