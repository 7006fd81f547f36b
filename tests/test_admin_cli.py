"""``opentier admin usage``: the usage ledger summed per tenant, user, API key or model, per UTC day or
month, read straight from the gateway's database (real PostgreSQL), priced from the configuration."""

from __future__ import annotations

import asyncio
import csv
import io
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from sqlalchemy.engine import make_url

from opentier.cli import main
from opentier.config import Settings
from opentier.db.engine import create_engine
from opentier.db.models.gateway import Tenant, TokenUsage

CONFIG = """
[usage]
currency = "CHF"

[usage.prices.gpt-x]
input_per_million = 1.5
output_per_million = 4

# The llm's price applies only to turns whose model has none.
[usage.prices.openai]
input_per_million = 100
output_per_million = 100
"""


@dataclass
class Seeded:
    tenant: str
    other_tenant: str
    alice: str
    bob: str
    key: str


def at(day: str) -> datetime:
    return datetime.fromisoformat(day).replace(hour=12, tzinfo=UTC)


async def seed(settings: Settings) -> Seeded:
    """Two tenants with ledger rows in March and April 2032 (dates no other test writes)."""
    seeded = Seeded(
        f"acme-{uuid.uuid4().hex[:8]}",
        f"other-{uuid.uuid4().hex[:8]}",
        str(uuid.uuid4()),
        str(uuid.uuid4()),
        str(uuid.uuid4()),
    )
    engine = create_engine(settings, pool_size=1, max_overflow=0)
    try:
        async with engine.begin() as conn:
            tenant_id, other_id = uuid.uuid4(), uuid.uuid4()
            await conn.execute(
                sa.insert(Tenant),
                [{"id": tenant_id, "name": seeded.tenant}, {"id": other_id, "name": seeded.other_tenant}],
            )
            rows = [
                # (tenant, user, key, llm, model, day, input, output, estimated)
                (tenant_id, seeded.alice, seeded.key, "openai", "gpt-x", "2032-03-02", 1000, 200, False),
                (tenant_id, seeded.alice, seeded.key, "openai", "gpt-x", "2032-03-15", 3000, 800, False),
                (tenant_id, seeded.bob, None, "local", "", "2032-03-15", 50, 70, True),
                (tenant_id, seeded.bob, None, "openai", "", "2032-04-01", 10, 20, False),
                (other_id, str(uuid.uuid4()), None, "openai", "gpt-x", "2032-03-15", 999_999, 999_999, False),
            ]
            await conn.execute(
                sa.insert(TokenUsage),
                [
                    {
                        "tenant_id": tenant,
                        "user_id": uuid.UUID(user),
                        "api_key_id": uuid.UUID(key) if key else None,
                        "llm": llm,
                        "model": model,
                        "created_at": at(day),
                        "input_tokens": inp,
                        "output_tokens": out,
                        "estimated": estimated,
                    }
                    for tenant, user, key, llm, model, day, inp, out, estimated in rows
                ],
            )
    finally:
        await engine.dispose()
    return seeded


@pytest.fixture
def runner(database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    for key in ("OPENTIER_CONFIG", "OPENTIER_DATABASE__URL", "OPENTIER_DATABASE__PASSWORD"):
        monkeypatch.delenv(key, raising=False)
    (tmp_path / "opentier.toml").write_text(CONFIG)
    url = make_url(database_url)
    env = {
        "OPENTIER_CONFIG": str(tmp_path / "opentier.toml"),
        "OPENTIER_DATA_DIR": str(tmp_path / "state"),
        "OPENTIER_DATABASE__URL": url._replace(password=None).render_as_string(hide_password=False),
    }
    if url.password:
        env["OPENTIER_DATABASE__PASSWORD"] = url.password
    return CliRunner(env=env)


@pytest.fixture
def seeded(db_settings: Settings) -> Seeded:
    return asyncio.run(seed(db_settings))


def csv_rows(output: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(output)))


def test_usage_per_model_and_month_as_csv(runner: CliRunner, seeded: Seeded) -> None:
    span = ["--from", "2032-03-01", "--to", "2032-04-30"]
    done = runner.invoke(
        main,
        [
            "admin",
            "usage",
            "--tenant",
            seeded.tenant,
            "--group-by",
            "model",
            "--period",
            "month",
            *span,
            "--csv",
        ],
    )
    assert done.exit_code == 0, done.output
    found = {(r["period"], r["llm"], r["model"]): r for r in csv_rows(done.output)}
    assert set(found) == {("2032-03", "openai", "gpt-x"), ("2032-03", "local", ""), ("2032-04", "openai", "")}
    gpt = found[("2032-03", "openai", "gpt-x")]
    assert (gpt["input_tokens"], gpt["output_tokens"], gpt["total_tokens"], gpt["turns"]) == (
        "4000",
        "1000",
        "5000",
        "2",
    )
    # The model's price, not the llm's: 4000 * 1.5 / 1e6 + 1000 * 4 / 1e6.
    assert Decimal(gpt["cost"]) == Decimal("0.010000") and gpt["currency"] == "CHF"
    local = found[("2032-03", "local", "")]
    assert (local["cost"], local["unpriced_turns"], local["estimated_turns"]) == ("", "1", "1")
    # No model recorded: the llm's price.
    assert Decimal(found[("2032-04", "openai", "")]["cost"]) == Decimal("0.003000")


def test_usage_per_user_and_day_as_a_table(runner: CliRunner, seeded: Seeded) -> None:
    done = runner.invoke(
        main, ["admin", "usage", "--tenant", seeded.tenant, "--from", "2032-03-15", "--to", "2032-03-15"]
    )
    assert done.exit_code == 0, done.output
    assert "2032-03-15" in done.output and "2032-03-02" not in done.output
    assert "3800" in done.output and "0.007700" in done.output, done.output  # Alice's day, priced
    assert "120" in done.output  # Bob's turn, unpriced
    assert "999999" not in done.output  # never the other tenant's


def test_usage_of_every_tenant_and_errors(runner: CliRunner, seeded: Seeded) -> None:
    done = runner.invoke(
        main,
        ["admin", "usage", "--group-by", "tenant", "--from", "2032-03-15", "--to", "2032-03-15", "--csv"],
    )
    assert done.exit_code == 0, done.output
    totals = {r["total_tokens"] for r in csv_rows(done.output)}
    assert {"3920", str(2 * 999_999)} <= totals  # both tenants, when no tenant is named

    unknown = runner.invoke(main, ["admin", "usage", "--tenant", "no-such-tenant"])
    assert unknown.exit_code == 2
    assert "not_found" in unknown.output
    backwards = runner.invoke(main, ["admin", "usage", "--from", "2032-04-01", "--to", "2032-03-01"])
    assert backwards.exit_code == 2
    assert "invalid_request" in backwards.output


def test_without_prices_no_row_has_a_cost(runner: CliRunner, seeded: Seeded, tmp_path: Path) -> None:
    unpriced = tmp_path / "unpriced.toml"
    unpriced.write_text("")
    done = runner.invoke(
        main,
        [
            "--config",
            str(unpriced),
            "admin",
            "usage",
            "--tenant",
            seeded.tenant,
            "--from",
            "2032-03-01",
            "--to",
            "2032-03-31",
            "--csv",
        ],
    )
    assert done.exit_code == 0, done.output
    rows = csv_rows(done.output)
    assert len(rows) == 3  # Alice on the 2nd and the 15th, Bob on the 15th
    assert all(row["cost"] == "" and row["unpriced_turns"] == row["turns"] for row in rows)
    assert {row["currency"] for row in rows} == {"USD"}
