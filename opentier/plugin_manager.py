"""Plugin discovery (stevedore, entry-point group ``opentier``) and registration (pluggy).

A plugin that fails to import, or whose hooks are invalid, is recorded with its error and skipped: the
others still load. A hook implementation whose name matches no spec fails loudly through
``check_pending()``. ``OPENTIER_LOAD_PLUGINS`` (comma-separated allow-list) and
``OPENTIER_DISABLE_PLUGIN_AUTOLOAD`` restrict what is loaded.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import logging
import os
import sys
import traceback
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint
from types import ModuleType
from typing import Any

import pluggy
from stevedore import NamedExtensionManager
from stevedore.extension import ExtensionManager

from opentier import hookspecs
from opentier.components import ComponentKind
from opentier.config import PluginSettings, Settings
from opentier.errors import OpenTierError, PluginError, PluginValidationError
from opentier.registry import Registry

ENTRY_POINT_GROUP = "opentier"
LOAD_PLUGINS_ENV = "OPENTIER_LOAD_PLUGINS"
DISABLE_AUTOLOAD_ENV = "OPENTIER_DISABLE_PLUGIN_AUTOLOAD"
TRACE_ENV = "OPENTIER_TRACE_PLUGINS"

log = logging.getLogger(__name__)

REGISTRATION_HOOKS: dict[ComponentKind, str] = {
    ComponentKind.LOADER: "register_loaders",
    ComponentKind.CLEANER: "register_cleaners",
    ComponentKind.EMBEDDER: "register_embedders",
    ComponentKind.RETRIEVER: "register_retrievers",
    ComponentKind.RERANKER: "register_rerankers",
    ComponentKind.LLM: "register_llms",
}


@dataclass(frozen=True, slots=True)
class PluginInfo:
    """A plugin that loaded."""

    name: str
    distribution: str | None
    version: str | None
    module: str


@dataclass(frozen=True, slots=True)
class PluginFailure:
    """A plugin that did not load, and why."""

    name: str
    distribution: str | None
    version: str | None
    error: str


@dataclass(slots=True)
class PluginSelection:
    """Which installed plugins to load."""

    allow: list[str] | None = None
    autoload: bool = True
    trace: bool = False
    options: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def from_settings(
        cls, settings: PluginSettings, environ: dict[str, str] | None = None
    ) -> PluginSelection:
        """Settings, overridden by the documented environment switches."""
        env = os.environ if environ is None else environ
        allow = settings.load
        if env.get(LOAD_PLUGINS_ENV) is not None:
            allow = [name.strip() for name in env[LOAD_PLUGINS_ENV].split(",") if name.strip()]
        autoload = not (settings.disable_autoload or _truthy(env.get(DISABLE_AUTOLOAD_ENV)))
        trace = settings.trace or _truthy(env.get(TRACE_ENV))
        return cls(allow=allow, autoload=autoload, trace=trace, options=dict(settings.options))


class PluginSystem:
    """A pluggy manager with OpenTier's specs, the plugins it loaded and the components they gave."""

    def __init__(self, selection: PluginSelection | None = None) -> None:
        self.selection = selection or PluginSelection()
        self.pm = pluggy.PluginManager(ENTRY_POINT_GROUP)
        self.pm.add_hookspecs(hookspecs)
        self.registry = Registry()
        self.loaded: list[PluginInfo] = []
        self.failures: list[PluginFailure] = []
        if self.selection.trace:
            self.pm.trace.root.setwriter(lambda msg: sys.stderr.write(f"[opentier plugins] {msg}"))
            self.pm.enable_tracing()

    # -- discovery -----------------------------------------------------------------------------

    def discover(self) -> None:
        """Load the plugins installed in this environment, as the selection allows."""
        if not self.selection.autoload:
            return
        failures: list[tuple[EntryPoint, BaseException]] = []

        def on_failure(_manager: Any, entry_point: EntryPoint, err: BaseException) -> None:
            failures.append((entry_point, err))

        # Hand stevedore the entry points read now, rather than its caches (in memory and on disk):
        # a distribution installed while the process runs is then visible to the next discovery, and
        # each entry point keeps its distribution for the listing.
        importlib.invalidate_caches()
        ExtensionManager.ENTRY_POINT_CACHE[ENTRY_POINT_GROUP] = _entry_points()
        manager: ExtensionManager[Any]
        if self.selection.allow is None:
            manager = ExtensionManager(ENTRY_POINT_GROUP, on_load_failure_callback=on_failure)
        else:
            missing: list[str] = []
            manager = NamedExtensionManager(
                ENTRY_POINT_GROUP,
                names=self.selection.allow,
                name_order=True,
                on_load_failure_callback=on_failure,
                on_missing_entrypoints_callback=missing.extend,
            )
            for name in missing:
                self.failures.append(
                    PluginFailure(
                        name,
                        None,
                        None,
                        f"{LOAD_PLUGINS_ENV} names {name!r}, which is not installed",
                    )
                )
        for entry_point, err in failures:
            dist, version = _dist_of(entry_point)
            self.failures.append(PluginFailure(entry_point.name, dist, version, _describe(err)))
            log.warning("plugin %s failed to load: %s", entry_point.name, _describe(err))
        for extension in manager.extensions:
            dist, version = _dist_of(extension.entry_point)
            self.add(extension.plugin, extension.name, distribution=dist, version=version)

    def add(
        self,
        plugin: object,
        name: str,
        *,
        distribution: str | None = None,
        version: str | None = None,
    ) -> bool:
        """Register one plugin object (usually a module); record and skip it if its hooks are invalid."""
        try:
            self.pm.register(plugin, name=name)
        except pluggy.PluginValidationError as err:
            self.failures.append(PluginFailure(name, distribution, version, str(err)))
            log.warning("plugin %s is invalid: %s", name, err)
            return False
        except ValueError as err:  # pluggy: the same name or object registered twice
            raise PluginError(f"plugin {name!r} cannot be registered: {err}") from err
        module = plugin.__name__ if isinstance(plugin, ModuleType) else type(plugin).__module__
        self.loaded.append(PluginInfo(name, distribution, version, module))
        return True

    def check(self) -> None:
        """Fail loudly when a plugin implements a hook that does not exist (a misspelled name)."""
        try:
            self.pm.check_pending()
        except pluggy.PluginValidationError as err:
            plugin = getattr(err, "plugin", None)
            owner = self.pm.get_name(plugin) if plugin is not None else "?"
            raise PluginValidationError(
                f"plugin {owner!r} implements a hook that OpenTier does not define: {err}. "
                f"Known hooks: {', '.join(sorted(self.hook_names()))}"
            ) from err

    # -- registration --------------------------------------------------------------------------

    def collect(self) -> Registry:
        """Call every registration hook, one plugin at a time so each component knows its owner."""
        for kind, hook_name in REGISTRATION_HOOKS.items():
            caller = getattr(self.pm.hook, hook_name)
            for impl in caller.get_hookimpls():
                self._call_registration(kind, impl)
        return self.registry

    def _call_registration(self, kind: ComponentKind, impl: Any) -> None:
        plugin_name: str = impl.plugin_name

        def register(component: object) -> None:
            self.registry.add(kind, component, plugin_name)

        try:
            impl.function(**{arg: register for arg in impl.argnames})
        except OpenTierError:
            raise
        except Exception as err:
            raise PluginError(
                f"plugin {plugin_name!r} failed in {REGISTRATION_HOOKS[kind]}: {_describe(err)}"
            ) from err

    def hook_names(self) -> Iterable[str]:
        return (name for name in dir(hookspecs) if getattr(getattr(hookspecs, name), "opentier_spec", None))

    def components_of(self, plugin: str) -> list[tuple[ComponentKind, str]]:
        return self.registry.by_plugin(plugin)


def load_plugins(
    settings: Settings | None = None,
    *,
    selection: PluginSelection | None = None,
    extra: Sequence[tuple[str, object]] = (),
) -> PluginSystem:
    """Discover, validate and collect: the one call the host and the CLI make.

    :param extra: ``(name, plugin)`` pairs registered in addition to the installed plugins (tests).
    """
    if selection is None:
        selection = PluginSelection.from_settings(settings.plugins) if settings else PluginSelection()
    system = PluginSystem(selection)
    system.discover()
    for name, plugin in extra:
        system.add(plugin, name)
    system.check()
    system.collect()
    return system


def _entry_points() -> list[EntryPoint]:
    """The group's entry points, once each (an editable install can appear twice on the path)."""
    seen: set[tuple[str, str]] = set()
    found: list[EntryPoint] = []
    for entry_point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        if (entry_point.name, entry_point.value) not in seen:
            seen.add((entry_point.name, entry_point.value))
            found.append(entry_point)
    return found


def _dist_of(entry_point: EntryPoint) -> tuple[str | None, str | None]:
    dist = entry_point.dist
    if dist is None:
        return None, None
    return dist.metadata["Name"], dist.version


def _describe(err: BaseException) -> str:
    last = traceback.extract_tb(err.__traceback__)[-1:] if err.__traceback__ else []
    where = f" ({last[0].filename}:{last[0].lineno})" if last else ""
    return f"{type(err).__name__}: {err}{where}"


def _truthy(value: str | None) -> bool:
    return value is not None and value.strip().lower() in {"1", "true", "yes", "on"}
