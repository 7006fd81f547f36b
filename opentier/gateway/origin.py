"""Where the current request comes from: the client address (behind trusted proxies) and its id."""

from __future__ import annotations

from quart import has_websocket_context, request, websocket

from opentier.gateway.identity.audit import Origin
from opentier.gateway.request_id import current_request_id
from opentier.gateway.state import gateway_state


def client_address() -> str | None:
    """The client's address (of a request or a WebSocket): the connection's, or with
    ``auth.trusted_proxies`` proxies in front, the entry of ``X-Forwarded-For`` the nearest untrusted hop
    added (entries further left can be forged)."""
    connection = websocket if has_websocket_context() else request
    proxies = gateway_state().settings.auth.trusted_proxies
    if proxies:
        forwarded = connection.headers.get("X-Forwarded-For", "")
        hops = [hop.strip() for hop in forwarded.split(",") if hop.strip()]
        if len(hops) >= proxies:
            return hops[-proxies][:100]
    return connection.remote_addr


def request_origin() -> Origin:
    return Origin(address=client_address(), request_id=current_request_id())
