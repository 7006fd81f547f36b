"""Where the current request comes from: the client address (behind trusted proxies) and its id."""

from __future__ import annotations

from quart import request

from opentier.gateway.identity.audit import Origin
from opentier.gateway.request_id import current_request_id
from opentier.gateway.state import gateway_state


def client_address() -> str | None:
    """The client's address: the connection's, or with ``auth.trusted_proxies`` proxies in front, the
    entry of ``X-Forwarded-For`` the nearest untrusted hop added (entries further left can be forged)."""
    proxies = gateway_state().settings.auth.trusted_proxies
    if proxies:
        hops = [hop.strip() for hop in request.headers.get("X-Forwarded-For", "").split(",") if hop.strip()]
        if len(hops) >= proxies:
            return hops[-proxies][:100]
    return request.remote_addr


def request_origin() -> Origin:
    return Origin(address=client_address(), request_id=current_request_id())
