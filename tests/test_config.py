"""Configuration: file plus environment, secrets from the environment only, errors that name the key."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from opentier.config import load_settings
from opentier.errors import ConfigError

OPENTIER = Path(sys.executable).with_name("opentier")


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("OPENTIER_"):
            monkeypatch.delenv(key)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "opentier.toml"
    path.write_text(text)
    return path


def test_file_values_and_environment_override(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, "[retrieval]\ntop_k = 12\n[host]\nport = 6000\n")
    assert load_settings(path).retrieval.top_k == 12
    monkeypatch.setenv("OPENTIER_HOST__PORT", "7000")
    monkeypatch.setenv("OPENTIER_INGESTION__CLEANERS", '["whitespace"]')
    settings = load_settings(path)
    assert settings.host.port == 7000
    assert settings.retrieval.top_k == 12  # untouched keys of the file survive
    assert settings.ingestion.cleaners == ["whitespace"]


def test_config_path_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, 'log_level = "DEBUG"\n')
    monkeypatch.setenv("OPENTIER_CONFIG", str(path))
    assert load_settings().log_level == "DEBUG"


def test_secret_in_file_is_refused_with_the_variable_to_use(tmp_path: Path) -> None:
    path = write(tmp_path, '[host]\ntoken = "hunter2"\n')
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    assert "host.token is a secret" in str(info.value)
    assert "OPENTIER_HOST__TOKEN" in str(info.value)
    assert "hunter2" not in str(info.value)


def test_secret_from_environment_is_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENTIER_HOST__TOKEN", "from-env")
    token = load_settings().host.token
    assert token is not None and token.get_secret_value() == "from-env"


def test_invalid_value_names_key_value_and_what_is_allowed(tmp_path: Path) -> None:
    path = write(tmp_path, 'log_level = "LOUD"\n[host]\nport = 70000\n')
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    message = str(info.value)
    assert "log_level = 'LOUD'" in message and "'DEBUG', 'INFO', 'WARNING' or 'ERROR'" in message
    assert "host.port = 70000" in message and "less than or equal to 65535" in message


def test_unknown_key_lists_the_allowed_keys(tmp_path: Path) -> None:
    path = write(tmp_path, "[retrieval]\ntopk = 3\n")
    with pytest.raises(ConfigError, match=r"retrieval.topk: unknown key; allowed here: ef_search, "):
        load_settings(path)


def test_cross_field_rule(tmp_path: Path) -> None:
    path = write(tmp_path, "[ingestion]\nchunk_tokens = 64\nchunk_overlap_tokens = 64\n")
    with pytest.raises(ConfigError, match=r"chunk_overlap_tokens .64. must be smaller"):
        load_settings(path)


def test_password_in_database_url_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, '[database]\nurl = "postgresql://me:pw@db.example/x"\n')
    with pytest.raises(ConfigError, match="OPENTIER_DATABASE__PASSWORD"):
        load_settings(path)


def test_production_refuses_placeholder_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENTIER_ENVIRONMENT", "production")
    monkeypatch.setenv("OPENTIER_HOST__TOKEN", "changeme")
    monkeypatch.setenv("OPENTIER_GATEWAY__JWT_SECRET", "a-real-secret-value-123")
    with pytest.raises(ConfigError, match=r"host.token must be set to a real secret"):
        load_settings()
    monkeypatch.setenv("OPENTIER_HOST__TOKEN", "another-real-secret-456")
    assert load_settings().environment == "production"


def test_broken_toml_names_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "[host\nport = 1\n")
    with pytest.raises(ConfigError, match=f"config file {path} is not valid TOML"):
        load_settings(path)


def test_missing_explicit_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope.toml")


def test_example_config_is_valid() -> None:
    example = Path(__file__).parent.parent / "opentier.example.toml"
    settings = load_settings(example)
    assert settings.retrieval.retriever == "hybrid"


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("OPENTIER_")}
    environ.update(env or {})
    return subprocess.run([str(OPENTIER), *args], capture_output=True, text=True, env=environ)


def test_config_show_hides_secrets_and_shows_overrides() -> None:
    done = run_cli(
        "config",
        "show",
        env={"OPENTIER_HOST__TOKEN": "s3cr3t-value", "OPENTIER_RETRIEVAL__TOP_K": "21"},
    )
    assert done.returncode == 0, done.stderr
    assert "s3cr3t-value" not in done.stdout
    assert 'token = "**********"' in done.stdout
    assert "top_k = 21" in done.stdout
    assert "# jwt_secret is not set" in done.stdout


def test_cli_reports_invalid_config_without_traceback(tmp_path: Path) -> None:
    path = write(tmp_path, "[host]\nport = -1\n")
    done = run_cli("--config", str(path), "config", "show")
    assert done.returncode == 2
    assert "error [config_invalid]" in done.stderr and "host.port = -1" in done.stderr
    assert "Traceback" not in done.stderr
