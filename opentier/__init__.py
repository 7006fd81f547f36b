"""OpenTier: retrieval-augmented chat as a plugin framework.

Plugin authors need only :data:`hookimpl` from here and the base classes in :mod:`opentier.components`.
"""

from __future__ import annotations

import os
from importlib.metadata import PackageNotFoundError, version

# Before anything imports grpc (it reads this once): gRPC's fork handlers, on by default, run in every
# fork() of a process that uses gRPC, including the one subprocess makes to start a program as another
# user (the embedded PostgreSQL's tools, when we run as root). With other threads in gRPC, the child
# then crashed now and then before its exec (SIGSEGV in a quarter of the forks, measured: see
# tests/test_embedded_postgres.py). OpenTier never forks to use gRPC in the child, so it needs none of
# them. A value set in the environment wins.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

import pluggy

hookimpl = pluggy.HookimplMarker("opentier")

try:
    __version__ = version("opentier")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0"

__all__ = ["__version__", "hookimpl"]
