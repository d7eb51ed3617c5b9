"""`/docs` and `/redoc` work without internet: every asset they reference is served by Kuda."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import httpx
import pytest


class _Refs(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.refs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.refs += [v for k, v in attrs if k in ("src", "href") and v]


def references(html: str) -> list[str]:
    """URLs in src/href attributes and in quoted `url: '...'` script settings."""
    parser = _Refs()
    parser.feed(html)
    quoted = re.findall(r"""url:\s*['"]([^'"]+)['"]|spec-url=['"]([^'"]+)['"]""", html)
    return parser.refs + [a or b for a, b in quoted]


@pytest.mark.parametrize(
    ("page", "assets"),
    [
        ("/docs", {"swagger-ui-bundle.js", "swagger-ui.css", "favicon.png"}),
        ("/redoc", {"redoc.standalone.js", "favicon.png"}),
    ],
)
async def test_docs_pages_reference_only_local_assets_and_they_are_served(
    client: httpx.AsyncClient, page: str, assets: set[str]
) -> None:
    response = await client.get(page)
    assert response.status_code == 200 and "text/html" in response.headers["content-type"]
    refs = references(response.text)
    assert all(ref.startswith("/") and not ref.startswith("//") for ref in refs), refs
    assert not re.search(r"https?://(?!127\.0\.0\.1)", _code_only(response.text)), response.text
    served = {ref.rsplit("/", 1)[-1] for ref in refs if ref.startswith("/static/docs/")}
    assert served == assets
    for ref in refs:
        asset = await client.get(ref)
        assert asset.status_code == 200, ref
        assert len(asset.content) > 100, ref
    if page == "/docs":
        assert "/openapi.json" in refs
        js = await client.get("/static/docs/swagger-ui-bundle.js")
        assert js.headers["content-type"].startswith(("text/javascript", "application/javascript"))
        assert 'PACKAGE_VERSION:"5.' in js.text  # Swagger UI 5: renders OpenAPI 3.1
        assert (await client.get("/openapi.json")).json()["openapi"].startswith("3.1")


def _code_only(html: str) -> str:
    """The page without HTML comments (which may cite sources by URL)."""
    return re.sub(r"<!--.*?-->", "", html, flags=re.S)


async def test_the_oauth2_redirect_page_is_served(client: httpx.AsyncClient) -> None:
    response = await client.get("/docs/oauth2-redirect")
    assert response.status_code == 200 and "oauth2" in response.text.lower()
