"""Documentation that cannot fall behind: every hook and every configuration key is documented."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest
from pydantic import BaseModel

from opentier import hookspecs
from opentier.config import Settings

ROOT = Path(__file__).parent.parent
HOOKS_DOC = (ROOT / "docs" / "hooks.md").read_text()
CONFIG_DOC = (ROOT / "docs" / "configuration.md").read_text()
EXAMPLE = (ROOT / "opentier.example.toml").read_text()

SPECS = sorted(name for name, value in vars(hookspecs).items() if hasattr(value, "opentier_spec"))


def section(name: str) -> str:
    match = re.search(rf"^## {name}\n(.*?)(?=^## |\Z)", HOOKS_DOC, re.M | re.S)
    assert match, f"docs/hooks.md has no '## {name}' section: document the hook {name}"
    return match.group(1)


def test_there_are_hooks() -> None:
    assert {"register_loaders", "register_llms", "opentier_startup"} <= set(SPECS)


@pytest.mark.parametrize("name", SPECS)
def test_hook_is_documented(name: str) -> None:
    text = section(name)
    params = list(inspect.signature(getattr(hookspecs, name)).parameters)
    assert re.search(rf"^{name}\(", text, re.M), f"{name}: the signature is not shown"
    for param in params:
        assert f"- `{param}`:" in text, f"{name}: argument {param!r} is not described"
    examples = re.findall(r"```python\n(.*?)```", text, re.S)
    assert any(f"def {name}(" in ex and "@hookimpl" in ex for ex in examples), (
        f"{name}: no example implementation"
    )


def test_no_documented_hook_is_stale() -> None:
    documented = set(re.findall(r"^## (\w+)$", HOOKS_DOC, re.M))
    assert documented == set(SPECS)


def config_keys(model: type[BaseModel] = Settings, prefix: str = "") -> list[str]:
    keys = []
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            keys.extend(config_keys(annotation, f"{prefix}{name}."))
        else:
            keys.append(prefix + name)
    return keys


@pytest.mark.parametrize("key", config_keys())
def test_config_key_is_documented(key: str) -> None:
    leaf = key.rsplit(".", 1)[-1]
    assert f"`{key}`" in CONFIG_DOC, f"docs/configuration.md does not describe `{key}`"
    assert re.search(rf"^#? ?{leaf}\b", EXAMPLE, re.M), f"opentier.example.toml lacks {key}"


def test_configuration_reference_is_current() -> None:
    from opentier.devtools import configdoc

    assert configdoc.current_block(CONFIG_DOC) == configdoc.render(), (
        "docs/configuration.md is stale: run python -m opentier.devtools.configdoc"
    )
