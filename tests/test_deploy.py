"""The deploy files under infra/: the production config loads with the real settings loader, the compose
file is valid (``docker compose config`` when the compose plugin is installed, its structure always),
the Dockerfile and the systemd units have what docs/deploy.md promises. No container is built or run."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from opentier_llm_claude.options import ClaudeOptions

from opentier.config import load_settings
from opentier.errors import ConfigError

INFRA = Path(__file__).parent.parent / "infra"
COMPOSE = INFRA / "compose.yaml"
SECRETS = {
    "OPENTIER_DATABASE__PASSWORD": "db-password-for-the-test",
    "OPENTIER_HOST__TOKEN": "host-token-for-the-test-0123456789abcdef",
    "OPENTIER_GATEWAY__JWT_SECRET": "jwt-secret-for-the-test-0123456789abcdef0123456789",
}
OPENTIER_SERVICES = ("migrate", "host", "gateway")


@pytest.fixture
def secrets_in_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("OPENTIER_CHAT__ANTHROPIC_API_KEY", "sk-ant-test")


def test_the_production_config_loads_with_the_real_settings_loader(secrets_in_env: None) -> None:
    settings = load_settings(INFRA / "opentier.production.toml")
    assert settings.environment == "production"
    assert settings.database.url and settings.database.url.startswith("postgresql://")
    assert settings.limits.storage.startswith("redis://")
    assert settings.auth.throttle_storage.startswith("redis://")
    assert settings.chat.llm == "claude"
    assert settings.gateway.host_targets
    assert settings.host.token is not None and settings.gateway.jwt_secret is not None
    assert settings.chat.anthropic_api_key is not None
    # The claude plugin's own table is checked by the plugin's parser, as at start-up.
    options = ClaudeOptions.parse(settings.plugins.options["claude"])
    assert options.max_tokens == 2048


def test_the_production_config_refuses_to_start_without_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (*SECRETS, "OPENTIER_CHAT__ANTHROPIC_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ConfigError, match="OPENTIER_HOST__TOKEN"):
        load_settings(INFRA / "opentier.production.toml")


def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return data


def test_the_compose_file_runs_postgres_host_and_gateway_with_only_the_gateway_published() -> None:
    services = compose()["services"]
    assert set(services) == {"postgres", *OPENTIER_SERVICES}
    assert services["postgres"]["image"].startswith("pgvector/pgvector:")
    published = {name for name, service in services.items() if service.get("ports")}
    assert published == {"gateway"}
    assert all("expose" not in service for service in services.values())
    networks = {tuple(service["networks"]) for service in services.values()}
    assert networks == {("backend",)}, "one private network for every service"

    for name in ("postgres", "host", "gateway"):
        check = services[name]["healthcheck"]
        assert check["test"] and not check.get("disable"), name
    assert "/readyz" in " ".join(services["gateway"]["healthcheck"]["test"])
    assert services["migrate"]["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    assert services["host"]["depends_on"]["migrate"] == {"condition": "service_completed_successfully"}
    assert services["gateway"]["depends_on"]["host"] == {"condition": "service_healthy"}

    for name in OPENTIER_SERVICES:
        environment = services[name]["environment"]
        assert environment["OPENTIER_ENVIRONMENT"] == "production"
        assert "@postgres:5432/" in environment["OPENTIER_DATABASE__URL"]
        # Secrets come from the environment (infra/.env), never written in the file.
        for secret in SECRETS:
            assert re.fullmatch(r"\$\{" + secret + r":\?[^}]+\}", environment[secret]), (name, secret)
        assert services[name]["read_only"] is True
    assert "host:50051" in services["gateway"]["environment"]["OPENTIER_GATEWAY__HOST_TARGETS"]
    example = (INFRA / "env.example").read_text()
    assert all(f"\n{secret}=\n" in example for secret in SECRETS)


def _compose_plugin() -> str | None:
    """Why ``docker compose`` cannot run here, or None when it can."""
    if shutil.which("docker") is None:
        return "no docker client installed"
    probe = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True)
    if probe.returncode != 0:
        said = (probe.stderr or probe.stdout).strip().splitlines()
        return f"the docker client has no compose plugin ({said[0] if said else probe.returncode})"
    return None


def test_docker_compose_config_accepts_the_compose_file(tmp_path: Path) -> None:
    missing = _compose_plugin()
    if missing is not None:
        pytest.skip(f"`docker compose config` not run: {missing}")
    project = tmp_path / "infra"
    shutil.copytree(INFRA, project)
    (project / ".env").write_text("".join(f"{name}={value}\n" for name, value in SECRETS.items()))
    result = subprocess.run(
        ["docker", "compose", "-f", str(project / "compose.yaml"), "config", "--format", "json"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    rendered = yaml.safe_load(result.stdout)
    assert rendered["services"]["gateway"]["ports"]


def test_the_dockerfile_is_multi_stage_non_root_with_a_healthcheck() -> None:
    text = (INFRA / "Dockerfile").read_text()
    stages = re.findall(r"^FROM \S+ AS (\w+)$", text, re.MULTILINE)
    assert stages == ["build", "runtime"]
    runtime = text.split("AS runtime", 1)[1]
    user = re.findall(r"^USER (\S+)$", runtime, re.MULTILINE)
    assert user and not user[-1].startswith(("root", "0"))
    assert re.search(r"^HEALTHCHECK .*\n.*/readyz", runtime, re.MULTILINE)
    assert "COPY --from=build /opt/opentier /opt/opentier" in runtime
    # The offline defaults: the embedder and the answerer ship in their packages.
    assert "./plugins/models/minilm" in text and "./plugins/models/extractive" in text
    assert 'CMD ["up"]' in runtime


@pytest.mark.parametrize("unit", ["opentier-host.service", "opentier-gateway.service"])
def test_the_systemd_units_are_hardened_and_valid(unit: str, tmp_path: Path) -> None:
    text = (INFRA / "systemd" / unit).read_text()
    settings = dict(re.findall(r"^(\w+)=(.*)$", text, re.MULTILINE))
    assert settings["User"] == "opentier"
    assert settings["NoNewPrivileges"] == "yes"
    assert settings["ProtectSystem"] == "strict"
    assert settings["ProtectHome"] == "yes" and settings["PrivateTmp"] == "yes"
    assert settings["CapabilityBoundingSet"] == ""
    assert settings["EnvironmentFile"] == "/etc/opentier/opentier.env"
    role = "host" if "host" in unit else "gateway"
    assert settings["ExecStart"] == f"/opt/opentier/bin/opentier {role} serve"
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        return
    # systemd's own parser; the venv's opentier stands in for /opt/opentier/bin/opentier.
    opentier = str(Path(sys.executable).parent / "opentier")
    copy = tmp_path / unit
    copy.write_text(text.replace("/opt/opentier/bin/opentier", opentier))
    result = subprocess.run(
        [analyze, "verify", "--man=no", str(copy)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr
