"""`kuda migrate --check` (what the Kubernetes pods' init container waits on) changes nothing
and says whether the database is at the latest revision."""

from __future__ import annotations

import asyncio

from tests import services
from tests.procs import kuda_env, run_kuda


async def test_migrate_check_is_false_until_migrated_and_changes_nothing() -> None:
    name, url = await services.create_database("kuda_check")
    env = kuda_env(DATABASE_URL=url)
    try:
        before = await asyncio.to_thread(run_kuda, "migrate", "--check", env=env)
        assert before.returncode == 1 and "NOT at" in before.stdout
        again = await asyncio.to_thread(run_kuda, "migrate", "--check", env=env)
        assert again.returncode == 1  # --check did not migrate anything
        done = await asyncio.to_thread(run_kuda, "migrate", env=env)
        assert done.returncode == 0, done.stderr
        after = await asyncio.to_thread(run_kuda, "migrate", "--check", env=env)
        assert after.returncode == 0 and "at the latest revision" in after.stdout
    finally:
        await services.drop_database(name)
