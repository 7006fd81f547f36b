"""What the ``opentier admin`` commands that call the gateway's API share: the connection options and
the client (the same as ``opentier remote``: ``--url``/``--api-key``, then ``OPENTIER_URL`` and
``OPENTIER_API_KEY``, then the file ``opentier remote login`` wrote), and one way to print errors.

The key must belong to an admin and hold the ``admin`` scope (``opentier up`` prints such a key on its
first run); tenant operations also need an admin of the operator tenant (``auth.operator_tenant``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from opentier.cli.remote_cmd import connect, connection_options
from opentier.client import Client

F = TypeVar("F", bound=Callable[..., Any])

#: ``--url``, ``--api-key``, ``--timeout``: put under ``@click.pass_context`` on each API command.
api_options = connection_options


def admin_client(ctx: click.Context, url: str | None, api_key: str | None, timeout: float) -> Client:
    """The client of an API command (close it: ``with admin_client(...) as client``)."""
    return connect(ctx, url, api_key, timeout)


def confirm_or_abort(prompt: str, expected: str, given: str | None) -> None:
    """A confirmation step: ``given`` (a ``--confirm`` flag) or the answer typed at a prompt must be
    exactly ``expected``; anything else aborts with exit code 1 before any change."""
    answer = given if given is not None else click.prompt(prompt, default="", show_default=False)
    if answer != expected:
        raise click.ClickException(f"not confirmed (expected {expected!r}); nothing was changed")
