"""The OpenAPI document names each request and response model once: quart-schema files models under
their class name, so two gateway models of the same name would silently describe one route with the
other's schema (and clients generated from the document would read the wrong fields)."""

from __future__ import annotations

import importlib
import pkgutil
from collections import defaultdict

from pydantic import BaseModel

import opentier.gateway


def gateway_models() -> dict[str, set[str]]:
    for module in pkgutil.walk_packages(opentier.gateway.__path__, "opentier.gateway."):
        importlib.import_module(module.name)
    found: dict[str, set[str]] = defaultdict(set)
    pending = list(BaseModel.__subclasses__())
    while pending:
        model = pending.pop()
        pending.extend(model.__subclasses__())
        if model.__module__.startswith("opentier.gateway."):
            found[model.__name__].add(model.__module__)
    return found


def test_no_two_gateway_models_share_a_name() -> None:
    models = gateway_models()
    assert len(models) > 20, "precondition: the routes' models were found"
    clashes = {name: sorted(modules) for name, modules in models.items() if len(modules) > 1}
    assert not clashes, f"rename one of each: {clashes}"
