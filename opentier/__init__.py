"""OpenTier: retrieval-augmented chat as a plugin framework.

Plugin authors need only :data:`hookimpl` from here and the base classes in :mod:`opentier.components`.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

import pluggy

hookimpl = pluggy.HookimplMarker("opentier")

try:
    __version__ = version("opentier")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0"

__all__ = ["__version__", "hookimpl"]
