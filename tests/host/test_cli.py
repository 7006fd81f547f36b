"""The ingestion commands end to end: the real `opentier` executable against the in-process host.

The host runs in the test process (with the test embedder, so no model is needed); each command
runs as a subprocess pointed at it by the environment, as a user's shell would.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from click.testing import CliRunner
from sqlalchemy.ext.asyncio import AsyncEngine

from opentier.cli import main
from opentier.db.models.gateway import Tenant

from .conftest import MAX_UPLOAD, TOKEN, Host, write_corpus

OPENTIER = Path(sys.executable).with_name("opentier")


@dataclass
class Done:
    code: int
    out: str
    err: str


def cli_env(host: Host, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENTIER_")}
    env.update(
        OPENTIER_DATA_DIR=str(host.settings.data_dir),
        OPENTIER_HOST__ADDRESS="127.0.0.1",
        OPENTIER_HOST__PORT=str(host.server.port),
        OPENTIER_HOST__TOKEN=TOKEN,
        OPENTIER_INGESTION__ROOTS=json.dumps([str(host.root)]),
        OPENTIER_INGESTION__MAX_UPLOAD_BYTES=str(MAX_UPLOAD),
        OPENTIER_TENANT=host.tenant,
        COLUMNS="200",  # wide tables, as in a big terminal
    )
    env.update(extra)
    return env


async def opentier(host: Host, *args: str, **env: str) -> Done:
    process = await asyncio.create_subprocess_exec(
        str(OPENTIER),
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=cli_env(host, **env),
        cwd=host.settings.data_dir.parent,
    )
    out, err = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode is not None
    return Done(process.returncode, out.decode(), err.decode())


def row(table: str, name: str) -> str:
    """The value of a two-column summary row (``│ created │ 4 │``)."""
    match = re.search(rf"│ {re.escape(name)}\s+│\s+(\S+)\s+│", table)
    assert match, f"no row {name!r} in:\n{table}"
    return match.group(1)


async def test_ingest_a_folder_outside_the_roots_streams_its_files(host: Host, tmp_path: Path) -> None:
    folder = tmp_path / "outside"
    (folder / "sub").mkdir(parents=True)
    write_corpus(folder, 3)
    write_corpus(folder / "sub", 1, prefix="deep")
    (folder / "notes.skip").write_text("left out")
    (folder / "scan.broken").write_bytes(b"%PDF-1.4 garbage")
    (folder / "huge.txt").write_bytes(b"word " * (MAX_UPLOAD // 4))

    done = await opentier(host, "ingest", str(folder), "--collection", "manuals", "--exclude", "*.skip")
    assert done.code == 1, done.err  # a document failed
    assert "created collection 'manuals'" in done.err
    assert (row(done.out, "created"), row(done.out, "failed"), row(done.out, "status")) == (
        "4",
        "1",
        "succeeded",
    )
    assert int(row(done.out, "chunks")) > 4 and row(done.out, "items") == "5/5"
    assert "chunks/s" in done.out and "elapsed" in done.out
    failures = done.out.split("Documents not indexed", 1)[1]
    assert re.search(r"scan\.broken\s+│ failed\s+│ loading\s+│ the file is corrupt", failures), failures
    assert re.search(
        r"huge\.txt\s+│ not sent\s+│ loading\s+│ larger than ingestion\.max_upload_bytes", failures
    )
    assert "notes.skip" not in done.out

    listed = await opentier(host, "documents", "--collection", "manuals")
    assert listed.code == 0, listed.err
    sources = re.findall(r"^│ (\S+)", listed.out, re.M)
    assert sources == ["doc0.txt", "doc1.txt", "doc2.txt", "scan.broken", "sub/deep0.txt"]
    failed = await opentier(host, "documents", "-c", "manuals", "--status", "failed")
    assert "scan.broken" in failed.out and "doc0.txt" not in failed.out and "loading: the file" in failed.out

    (folder / "doc1.txt").unlink()
    (folder / "scan.broken").unlink()
    (folder / "huge.txt").unlink()
    (folder / "doc2.txt").write_text("Document 2, rewritten: propellers and thrust.")
    again = await opentier(
        host, "ingest", str(folder), "-c", "manuals", "--exclude", "*.skip", "--delete-missing"
    )
    assert again.code == 0, again.out + again.err
    counts = [row(again.out, name) for name in ("unchanged", "updated", "deleted", "failed")]
    assert counts == ["2", "1", "2", "0"]  # doc1 and the failed scan.broken are gone
    assert "Documents not indexed" not in again.out


async def test_ingest_a_path_inside_the_roots_and_inspect_jobs(host: Host) -> None:
    write_corpus(host.root, 2)
    done = await opentier(host, "ingest", str(host.root / "doc0.txt"), "-c", "docs")
    assert done.code == 0, done.out + done.err
    assert row(done.out, "created") == "1"
    job_id = re.search(r": job ([0-9a-f-]{36})$", done.out, re.M)
    assert job_id, done.out

    jobs = await opentier(host, "jobs", COLUMNS="400")  # room for a long temporary path
    assert jobs.code == 0 and job_id.group(1) in jobs.out and "succeeded" in jobs.out
    assert str(host.root / "doc0.txt") in jobs.out  # the host read the path itself
    shown = await opentier(host, "jobs", "show", job_id.group(1))
    assert shown.code == 0 and row(shown.out, "created") == "1" and row(shown.out, "created by") == "cli"
    cancelled = await opentier(host, "jobs", "cancel", job_id.group(1))
    assert cancelled.code == 0 and "is succeeded" in cancelled.out  # too late to cancel: nothing changes
    missing = await opentier(host, "jobs", "show", "00000000-0000-0000-0000-000000000000")
    assert missing.code == 2 and "error [not_found]: job" in missing.err
    other = await opentier(host, "jobs", "--tenant", "someone-else")
    assert other.code == 0 and "no ingestion jobs yet" in other.out


async def test_collections_commands(host: Host) -> None:
    created = await opentier(host, "collections", "create", "wings", "--description", "Wing manuals")
    assert created.code == 0 and "created collection 'wings'" in created.out and "test-hash" in created.out
    twice = await opentier(host, "collections", "create", "wings")
    assert twice.code == 2 and "error [already_exists]" in twice.err
    listed = await opentier(host, "collections")
    assert listed.code == 0 and re.search(r"│ wings\s+│\s+0 │\s+0 │ test-hash \(32\)", listed.out), listed.out
    elsewhere = await opentier(host, "collections", "--tenant", "someone-else", "list")
    assert "has no collections" in elsewhere.out
    deleted = await opentier(host, "collections", "delete", "wings", "--yes")
    assert deleted.code == 0 and "deleted collection 'wings': 0 documents, 0 chunks" in deleted.out
    refused = await opentier(host, "ingest", str(host.root), "-c", "nothing", "--no-create")
    assert refused.code == 2 and "no collection named 'nothing'" in refused.err


async def test_when_the_host_is_not_running(host: Host, tmp_path: Path) -> None:
    unused = await opentier(host, "collections", OPENTIER_HOST__PORT="1")
    assert unused.code == 2
    assert "error [host_unreachable]: the OpenTier host at 127.0.0.1:1 is not reachable" in unused.err
    assert "`opentier up`" in unused.err
    no_token = await opentier(host, "collections", OPENTIER_HOST__TOKEN="", OPENTIER_DATA_DIR=str(tmp_path))
    assert no_token.code == 2 and "no host token in" in no_token.err
    wrong = await opentier(host, "collections", OPENTIER_HOST__TOKEN="not-the-token")
    assert wrong.code == 2 and "error [unauthenticated]: the host token is not valid" in wrong.err


def test_help_of_the_ingestion_commands() -> None:
    runner = CliRunner()
    for args, phrase in (
        (["ingest"], "exits with status 1 when a document failed"),
        (["collections"], "named sets of documents"),
        (["collections", "create"], "--embedder"),
        (["documents"], "--status [dropped|failed|pending|processing|ready]"),
        (["jobs"], "jobs show ID"),
        (["jobs", "cancel"], "documents already stored stay stored"),
    ):
        result = runner.invoke(main, [*args, "--help"], terminal_width=120)
        assert result.exit_code == 0, result.output
        assert phrase in " ".join(result.output.split()), result.output


async def test_a_gateway_tenant_is_addressed_by_its_name(host: Host, db_engine: AsyncEngine) -> None:
    """The host knows a tenant by the gateway's id of it: ``--tenant NAME`` acts for the gateway's
    tenant of that name, so what the local commands store is what that tenant's users see through
    the gateway (and a name the gateway does not know stays as it is)."""
    name = f"acme-{uuid.uuid4().hex[:8]}"
    async with db_engine.begin() as conn:
        tenant_id = await conn.scalar(sa.insert(Tenant).values(name=name).returning(Tenant.id))
    database = {"OPENTIER_DATABASE__URL": str(host.settings.database.url)}
    if host.settings.database.password is not None:
        database["OPENTIER_DATABASE__PASSWORD"] = host.settings.database.password.get_secret_value()

    created = await opentier(host, "collections", "create", "handbook", "--tenant", name, **database)
    assert created.code == 0, created.err
    async with db_engine.connect() as conn:
        owners = (
            (
                await conn.execute(
                    sa.text("SELECT tenant_id FROM intelligence.collections WHERE name = 'handbook'")
                )
            )
            .scalars()
            .all()
        )
    assert owners == [str(tenant_id)]
    # The same tenant by its id; and by name in OPENTIER_TENANT.
    by_id = await opentier(host, "collections", "--tenant", str(tenant_id), **database)
    assert re.search(r"│ handbook\s+│", by_id.out), by_id.out
    by_env = await opentier(host, "collections", OPENTIER_TENANT=name, **database)
    assert re.search(r"│ handbook\s+│", by_env.out), by_env.out
    # A tenant the gateway does not know is the name itself: it does not see the handbook.
    unknown = await opentier(host, "collections", "--tenant", f"{name}-other", **database)
    assert unknown.code == 0 and "has no collections" in unknown.out
