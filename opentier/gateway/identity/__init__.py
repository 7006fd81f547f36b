"""Gateway identity: users, passwords, access and refresh tokens, API keys, throttling and audit.

Each module does one job; :mod:`opentier.gateway.identity.service` puts them together for the routes
and for :func:`opentier.gateway.principal.require`.
"""
