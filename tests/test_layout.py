"""The module layout the team relies on: each domain owns its routes, and no module of the
server imports another in a cycle (at any depth, lazy imports inside functions included)."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

from fastapi.routing import APIRoute

from server.app import create_app
from server.config import Settings
from tests.services import JWT_SECRET

ROOT = Path(__file__).resolve().parent.parent


def _module(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path, known: set[str]) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        found.update(name for name in names if name in known)
    return found


def _graph(package: str) -> dict[str, set[str]]:
    files = {_module(p): p for p in (ROOT / package).rglob("*.py")}
    known = set(files)
    return {name: _imports(path, known) - {name} for name, path in files.items()}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)) is not None:
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)) is not None:
            return found
    return None


def test_no_import_cycle_between_server_modules() -> None:
    graph = _graph("server")
    assert "server.rides.repository" in graph  # the graph really covers the domains
    assert _cycle(graph) is None, " -> ".join(_cycle(graph) or [])


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def _routes(module: str) -> set[tuple[str, str]]:
    router = importlib.import_module(module).router
    return {
        (route.path, method)
        for route in router.routes
        if isinstance(route, APIRoute)
        for method in route.methods
    }


def test_each_domain_serves_its_own_routes() -> None:
    assert _routes("server.chat.router") == {
        ("/api/v1/rides/{ride_id}/messages", "GET"),
        ("/api/v1/rides/{ride_id}/messages", "POST"),
    }
    assert _routes("server.reviews.router") == {
        ("/api/v1/rides/{ride_id}/reviews", "POST"),
        ("/api/v1/users/{user_id}/reviews", "GET"),
    }
    assert ("/api/v1/rides/{ride_id}/bookings", "POST") in _routes("server.bookings.router")
    assert {path for path, _ in _routes("server.rides.router")} == {
        "/api/v1/rides",
        "/api/v1/rides/{ride_id}",
        "/api/v1/rides/{ride_id}/cancel",
        "/api/v1/rides/{ride_id}/start",
        "/api/v1/rides/{ride_id}/complete",
    }


def test_the_app_serves_every_domain_router() -> None:
    app = create_app(Settings(database_url="postgresql://x/y", jwt_secret=JWT_SECRET))
    paths = set(app.openapi()["paths"])
    for module in ("server.chat.router", "server.reviews.router", "server.bookings.router"):
        assert {path for path, _ in _routes(module)} <= paths
