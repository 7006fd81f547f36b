"""The component registry: components by kind and name, and which plugin registered each."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar, cast

from opentier.components import COMPONENT_BASES, NAME_PATTERN, Component, ComponentKind
from opentier.errors import DuplicateComponentError, InvalidComponentError, UnknownComponentError

C = TypeVar("C", bound=Component)


@dataclass(frozen=True, slots=True)
class Registration:
    component: Component
    plugin: str


class Registry:
    """Holds every registered component; duplicates and unknown names are errors that explain."""

    def __init__(self) -> None:
        self._by_kind: dict[ComponentKind, dict[str, Registration]] = {kind: {} for kind in ComponentKind}

    def add(self, kind: ComponentKind, component: object, plugin: str) -> None:
        """Record ``component`` of ``kind`` from ``plugin``; refuse invalid objects and duplicates."""
        base = COMPONENT_BASES[kind]
        if not isinstance(component, base):
            raise InvalidComponentError(
                f"plugin {plugin!r} registered {component!r} as a {kind}, but it is not an instance "
                f"of {base.__module__}.{base.__qualname__}"
            )
        name = getattr(component, "name", None)
        if not isinstance(name, str) or not NAME_PATTERN.match(name):
            raise InvalidComponentError(
                f"plugin {plugin!r} registered a {kind} named {name!r}; names must match "
                f"{NAME_PATTERN.pattern}"
            )
        existing = self._by_kind[kind].get(name)
        if existing is not None:
            raise DuplicateComponentError(
                f"{kind} {name!r} is registered twice: by plugin {existing.plugin!r} and by plugin "
                f"{plugin!r}; uninstall one or disable it with OPENTIER_LOAD_PLUGINS"
            )
        self._by_kind[kind][name] = Registration(component, plugin)

    def get(self, kind: ComponentKind, name: str) -> Component:
        """The component of ``kind`` called ``name``, or an error listing the available ones."""
        found = self._by_kind[kind].get(name)
        if found is None:
            available = ", ".join(sorted(self._by_kind[kind])) or "none"
            raise UnknownComponentError(f"no {kind} named {name!r}; available: {available}")
        return found.component

    def get_typed(self, base: type[C], name: str) -> C:
        """Like :meth:`get`, typed by the component base class (``registry.get_typed(Loader, "text")``)."""
        return cast(C, self.get(base.kind, name))

    def all(self, kind: ComponentKind) -> list[Component]:
        return [reg.component for reg in self._by_kind[kind].values()]

    def names(self, kind: ComponentKind) -> list[str]:
        return sorted(self._by_kind[kind])

    def registrations(self) -> list[tuple[ComponentKind, str, str]]:
        """Every (kind, name, plugin) triple, sorted, for listings."""
        return sorted(
            (kind, name, reg.plugin) for kind, regs in self._by_kind.items() for name, reg in regs.items()
        )

    def by_plugin(self, plugin: str) -> list[tuple[ComponentKind, str]]:
        return [(kind, name) for kind, name, owner in self.registrations() if owner == plugin]
