"""The plugin core: registration, duplicate and unknown names, misspelled hooks, selection switches."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from types import SimpleNamespace

import pytest

from opentier import hookimpl
from opentier.components import ComponentKind, Document, Loader, Source
from opentier.config import PluginSettings
from opentier.errors import (
    DuplicateComponentError,
    InvalidComponentError,
    PluginValidationError,
    UnknownComponentError,
)
from opentier.plugin_manager import PluginSelection, PluginSystem, load_plugins


class EchoLoader(Loader):
    description = "test loader"
    media_types = frozenset({"text/x-echo"})
    extensions = frozenset({".echo"})

    def __init__(self, name: str = "echo") -> None:
        self.name = name

    async def load(self, source: Source) -> AsyncIterator[Document]:
        yield Document.from_text(source.read_bytes().decode(), source=source.uri)


def loader_plugin(*loaders: Loader) -> object:
    @hookimpl
    def register_loaders(register: Callable[[Loader], None]) -> None:
        for loader in loaders:
            register(loader)

    return SimpleNamespace(register_loaders=register_loaders)


def fresh(*plugins: tuple[str, object]) -> PluginSystem:
    return load_plugins(selection=PluginSelection(autoload=False), extra=plugins)


async def test_registered_component_is_usable_and_attributed() -> None:
    system = fresh(("echo-plugin", loader_plugin(EchoLoader())))
    loader = system.registry.get_typed(Loader, "echo")
    assert system.components_of("echo-plugin") == [(ComponentKind.LOADER, "echo")]
    source = Source(uri="notes/a.echo", data=b"hello")
    assert loader.accepts(source)
    docs = [doc async for doc in loader.load(source)]
    assert [d.text for d in docs] == ["hello"]


def test_duplicate_component_names_both_plugins() -> None:
    with pytest.raises(DuplicateComponentError) as info:
        fresh(
            ("first-plugin", loader_plugin(EchoLoader())),
            ("second-plugin", loader_plugin(EchoLoader())),
        )
    message = str(info.value)
    assert "'first-plugin'" in message and "'second-plugin'" in message and "'echo'" in message


def test_same_name_in_different_kinds_is_allowed() -> None:
    from opentier.components import Cleaner, Dropped

    class EchoCleaner(Cleaner):
        name = "echo"

        async def clean(self, document: Document) -> Document | Dropped:
            return document

    @hookimpl
    def register_cleaners(register: Callable[[Cleaner], None]) -> None:
        register(EchoCleaner())

    system = fresh(
        ("loaders", loader_plugin(EchoLoader())),
        ("cleaners", SimpleNamespace(register_cleaners=register_cleaners)),
    )
    assert system.registry.names(ComponentKind.LOADER) == ["echo"]
    assert system.registry.names(ComponentKind.CLEANER) == ["echo"]


def test_unknown_name_lists_available() -> None:
    system = fresh(("p", loader_plugin(EchoLoader("alpha"), EchoLoader("beta"))))
    with pytest.raises(UnknownComponentError, match=r"no loader named 'gamma'; available: alpha, beta"):
        system.registry.get(ComponentKind.LOADER, "gamma")
    with pytest.raises(UnknownComponentError, match="available: none"):
        system.registry.get(ComponentKind.LLM, "claude")


def test_registering_a_non_component_is_refused() -> None:
    @hookimpl
    def register_loaders(register: Callable[[object], None]) -> None:
        register("not a loader")

    with pytest.raises(InvalidComponentError, match="'bad-plugin' registered 'not a loader'"):
        fresh(("bad-plugin", SimpleNamespace(register_loaders=register_loaders)))


def test_invalid_component_name_is_refused() -> None:
    with pytest.raises(InvalidComponentError, match="names must match"):
        fresh(("p", loader_plugin(EchoLoader("Has Spaces"))))


def test_misspelled_hook_fails_loudly() -> None:
    @hookimpl
    def register_loader(register: Callable[[Loader], None]) -> None:  # missing "s"
        register(EchoLoader())

    with pytest.raises(PluginValidationError) as info:
        fresh(("typo-plugin", SimpleNamespace(register_loader=register_loader)))
    assert "typo-plugin" in str(info.value)
    assert "register_loader" in str(info.value)
    assert "register_loaders" in str(info.value)  # the known hooks are listed


def test_hook_with_wrong_argument_is_recorded_and_others_load() -> None:
    @hookimpl
    def register_loaders(callback: Callable[[Loader], None]) -> None:  # wrong argument name
        callback(EchoLoader("never"))

    system = fresh(
        ("wrong-args", SimpleNamespace(register_loaders=register_loaders)),
        ("good", loader_plugin(EchoLoader())),
    )
    assert [f.name for f in system.failures] == ["wrong-args"]
    assert "callback" in system.failures[0].error
    assert system.registry.names(ComponentKind.LOADER) == ["echo"]


def test_selection_switches_from_environment() -> None:
    settings = PluginSettings(load=["a"], disable_autoload=False)
    assert PluginSelection.from_settings(settings, environ={}).allow == ["a"]
    env_allow = PluginSelection.from_settings(settings, environ={"OPENTIER_LOAD_PLUGINS": "x, y"})
    assert env_allow.allow == ["x", "y"]
    off = PluginSelection.from_settings(settings, environ={"OPENTIER_DISABLE_PLUGIN_AUTOLOAD": "1"})
    assert off.autoload is False
    assert PluginSelection.from_settings(settings, environ={"OPENTIER_DISABLE_PLUGIN_AUTOLOAD": "0"}).autoload


def test_disabled_autoload_loads_no_installed_plugin() -> None:
    system = load_plugins(selection=PluginSelection(autoload=False))
    assert system.loaded == [] and system.registry.registrations() == []


def test_allow_list_loads_only_named_and_reports_missing() -> None:
    system = load_plugins(selection=PluginSelection(allow=["text", "no-such-plugin"]))
    assert [p.name for p in system.loaded] == ["text"]
    assert system.loaded[0].distribution == "opentier-loader-text"
    assert [f.name for f in system.failures] == ["no-such-plugin"]
    assert "not installed" in system.failures[0].error


def test_lifecycle_hooks_reach_plugins() -> None:
    from opentier.config import Settings

    seen: list[str] = []

    @hookimpl
    def opentier_startup(settings: Settings) -> None:
        seen.append(f"start:{settings.environment}")

    @hookimpl
    def opentier_shutdown() -> None:
        seen.append("stop")

    system = fresh(
        (
            "life",
            SimpleNamespace(opentier_startup=opentier_startup, opentier_shutdown=opentier_shutdown),
        )
    )
    system.pm.hook.opentier_startup(settings=Settings())
    system.pm.hook.opentier_shutdown()
    assert seen == ["start:development", "stop"]
