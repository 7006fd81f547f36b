"""What a resource route needs from the request: the caller to send to the host, and the host client.

The tenant always comes from the authenticated principal, never from the request, so an id of another
tenant's object simply does not exist for the caller (the host answers not_found → 404).
"""

from __future__ import annotations

from opentier.gateway.host import HostClient
from opentier.gateway.principal import current_principal
from opentier.gateway.request_id import current_request_id
from opentier.gateway.state import gateway_state
from opentier.generated.intelligence.v1 import common_pb2

HOST_CLIENT_KEY = "host_client"


def caller() -> common_pb2.Caller:
    """The :class:`Caller` of the current request, from its principal and request id."""
    principal = current_principal()
    return common_pb2.Caller(
        tenant_id=principal.tenant_id,
        user_id=principal.user_id,
        scopes=sorted(principal.scopes),
        request_id=current_request_id() or "",
    )


def host_client() -> HostClient:
    """The app's pool of channels to the host."""
    client = gateway_state().extras.get(HOST_CLIENT_KEY)
    if not isinstance(client, HostClient):
        raise RuntimeError("the host client is not installed on this app (opentier.gateway.routes.register)")
    return client
