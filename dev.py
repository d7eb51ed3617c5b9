#!/usr/bin/env python3
"""The README's commands with nothing but Python 3.11+ (no make needed).

    python3 dev.py run [kuda serve options]   # the server on the embedded default
    python3 dev.py test [pytest options]      # the whole suite (real PostgreSQL and Redis); with
                                              # pytest options, only the pytest part
    python3 dev.py js                         # the JS SDK: tsc + node --test clients/js/test/
    python3 dev.py lint | typecheck | check   # ruff; mypy; lint + typecheck + test

The first call creates .venv/ and installs the project with its dev extras; later calls reuse
it until pyproject.toml changes.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
STAMP = VENV / ".installed"
JS = ROOT / "clients" / "js"


def ensure_venv() -> None:
    pyproject = ROOT / "pyproject.toml"
    if STAMP.exists() and STAMP.stat().st_mtime >= pyproject.stat().st_mtime:
        return
    if not (BIN / "python").exists():
        print("dev.py: creating .venv", file=sys.stderr)
        venv.create(VENV, with_pip=True)
    pip = [str(BIN / "python"), "-m", "pip", "install", "--quiet"]
    subprocess.run([*pip, "--upgrade", "pip"], check=True)
    subprocess.run([*pip, "-e", f"{ROOT}[dev]"], check=True, cwd=ROOT)
    STAMP.touch()


def run(*cmd: str) -> int:
    return subprocess.run(cmd, cwd=ROOT).returncode


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        sys.exit(f"dev.py: `{name}` not found: the JS SDK's checks need Node.js >= 18 and npm")
    return path


def ensure_node_modules() -> None:
    """`npm ci` from the committed lock file when node_modules is absent or older than the lock."""
    installed = JS / "node_modules" / ".package-lock.json"
    lock = JS / "package-lock.json"
    if installed.exists() and installed.stat().st_mtime >= lock.stat().st_mtime:
        return
    print("dev.py: npm ci in clients/js", file=sys.stderr)
    subprocess.run([tool("npm"), "ci", "--no-audit", "--no-fund"], cwd=JS, check=True)


def js() -> int:
    """The JS SDK's checks: its type check, then its tests (real `kuda serve` processes too)."""
    ensure_node_modules()
    tsc = str(JS / "node_modules" / ".bin" / "tsc")
    env = {**os.environ, "KUDA_PYTHON": str(BIN / "python")}
    node_test = [tool("node"), "--test", "clients/js/test/"]
    return (
        subprocess.run([tsc, "-p", str(JS / "tsconfig.json")], cwd=ROOT).returncode
        or subprocess.run(node_test, cwd=ROOT, env=env).returncode
    )


def main(argv: list[str]) -> int:
    if sys.version_info < (3, 11):  # noqa: UP036 - dev.py may be run by any python3
        sys.exit("dev.py: Kuda needs Python 3.11 or newer")
    command, rest = (argv[0], argv[1:]) if argv else ("", [])
    py = str(BIN / "python")
    commands = {
        "run": lambda: run(str(BIN / "kuda"), "serve", *rest),
        "test": lambda: run(py, "-m", "pytest", *rest) or (0 if rest else js()),
        "js": lambda: js(),
        "lint": lambda: (
            run(str(BIN / "ruff"), "check", ".") or run(str(BIN / "ruff"), "format", "--check", ".")
        ),
        "typecheck": lambda: run(str(BIN / "mypy")),
    }
    commands["check"] = lambda: commands["lint"]() or commands["typecheck"]() or commands["test"]()
    if command not in commands:
        sys.exit(__doc__)
    ensure_venv()
    return commands[command]()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
