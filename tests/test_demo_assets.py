"""The demo at `/` is static files shipped in the package; it imports the JS SDK from
`/static/sdk/`, which serves the SDK's own source (one copy: a link, never a drifting copy)."""

from __future__ import annotations

import re
from pathlib import Path

import httpx

from server import web

REPO = Path(__file__).resolve().parent.parent
SDK_SOURCE = REPO / "clients" / "js" / "src"
IMPORT = r"""^(?:import|export)\b[^"'\n]*?\bfrom\s*["']([^"']+)["']"""


def test_the_shipped_sdk_is_the_sdk_source_itself() -> None:
    assert web.SDK_DIR.is_symlink()
    assert web.SDK_DIR.resolve() == SDK_SOURCE.resolve()


async def test_every_sdk_file_is_served_byte_for_byte(client: httpx.AsyncClient) -> None:
    sources = sorted(p for p in SDK_SOURCE.iterdir() if p.suffix in (".js", ".ts"))
    assert any(p.name == "index.js" for p in sources)
    for path in sources:
        served = await client.get(f"/static/sdk/{path.name}")
        assert served.status_code == 200, path.name
        assert served.content == path.read_bytes(), path.name


async def test_the_page_and_every_module_it_imports_are_served_locally(
    client: httpx.AsyncClient,
) -> None:
    page = await client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    refs = re.findall(r"""(?:src|href)="([^"]+)\"""", page.text)
    assert all(ref.startswith(("/", "#", "data:")) for ref in refs), refs
    pending = [r for r in refs if r.startswith("/static/")]
    seen: set[str] = set()
    while pending:
        url = pending.pop()
        if url in seen:
            continue
        seen.add(url)
        response = await client.get(url)
        assert response.status_code == 200, url
        if url.endswith(".js"):
            assert "javascript" in response.headers["content-type"], url
            base = url.rsplit("/", 1)[0]
            for spec in re.findall(IMPORT, response.text, re.M):
                assert spec.startswith(("./", "/")), f"{url} imports {spec}: not a local module"
                pending.append(spec if spec.startswith("/") else f"{base}/{spec[2:]}")
    assert "/static/sdk/index.js" in seen and "/static/demo/app.js" in seen
    assert len(seen) >= 10
