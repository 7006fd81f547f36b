"""Admin calls of the gateway's API (``admin`` scope), one module per area, each a set of
:class:`opentier.client.calls.Call` builders run with ``client.send(...)`` by the sync and the async
client alike::

    from opentier.client import Client
    from opentier.client.admin import tenants

    with Client(url, api_key=key) as client:
        for tenant in client.send(tenants.list_tenants()).tenants:
            print(tenant.name)

See docs/admin.md. ``opentier admin …`` commands are built on these.
"""
