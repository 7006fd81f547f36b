"""``opentier db``: start, status, stop and migrate, embedded and with an external server."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy.engine import make_url

from opentier.cli import main
from opentier.db.embedded import EmbeddedPostgres
from opentier.db.migrate import head_revisions

HEADS = head_revisions(["gateway", "intelligence"])


@pytest.fixture
def embedded_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    for key in ("OPENTIER_CONFIG", "OPENTIER_DATABASE__URL", "OPENTIER_DATABASE__PASSWORD"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OPENTIER_DATA_DIR", str(tmp_path / "state"))
    return tmp_path / "state" / "postgres"


def test_embedded_start_status_stop(embedded_dir: Path) -> None:
    runner = CliRunner()
    try:
        started = runner.invoke(main, ["db", "start", "--migrate"])
        assert started.exit_code == 0, started.output
        assert "state:        running" in started.output
        assert f"host={embedded_dir / 'socket'}".replace("/", "%2F") in started.output
        assert f"intelligence: {HEADS['intelligence']} (up to date)" in started.output

        status = runner.invoke(main, ["db", "status"])
        assert status.exit_code == 0, status.output
        assert f"gateway:      {HEADS['gateway']} (up to date)" in status.output

        stopped = runner.invoke(main, ["db", "stop"])
        assert stopped.exit_code == 0 and "stopped the PostgreSQL" in stopped.output
    finally:
        EmbeddedPostgres(embedded_dir).stop()

    after = runner.invoke(main, ["db", "status"])
    assert after.exit_code == 1
    assert "state:        stopped" in after.output


def test_external_server_is_never_started(embedded_dir: Path, database_url: str) -> None:
    url = make_url(database_url)
    env = {"OPENTIER_DATABASE__URL": url._replace(password=None).render_as_string(hide_password=False)}
    if url.password:
        env["OPENTIER_DATABASE__PASSWORD"] = url.password
    runner = CliRunner(env=env)

    started = runner.invoke(main, ["db", "start"])
    assert started.exit_code == 0
    assert "starts or stops nothing" in started.output
    assert not embedded_dir.exists()

    migrated = runner.invoke(main, ["db", "migrate", "--side", "gateway"])
    assert migrated.exit_code == 0, migrated.output
    assert f"gateway:      {HEADS['gateway']} (up to date)" in migrated.output

    status = runner.invoke(main, ["db", "status"])
    assert status.exit_code == 0, status.output
    assert "reachable" in status.output


def test_unreachable_external_server_fails_status(embedded_dir: Path) -> None:
    runner = CliRunner(env={"OPENTIER_DATABASE__URL": f"postgresql://u@/x?host={embedded_dir}"})
    status = runner.invoke(main, ["db", "status"])
    assert status.exit_code == 1
    assert "unreachable" in status.output
