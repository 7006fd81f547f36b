"""A member is refused on every admin route: each route of the app whose view needs the ``admin`` scope
(found through ``require``'s ``required_scopes``, so routes added later are covered without naming
them) answers 403 ``permission_denied`` to a member's access token and to a member's API key, before
looking at the body or the ids in the path (no 400, no 404), and changes nothing."""

from __future__ import annotations

import re
import uuid

from quart import Quart
from quart.testing import QuartClient

from tests.gateway.conftest import Account, MakeUser, bearer

IGNORED_METHODS = {"HEAD", "OPTIONS"}
#: Routes that must be found, so that the enumeration cannot silently find nothing.
KNOWN = {
    ("GET", "/v1/users"),
    ("POST", "/v1/users/<user_id>/logout"),
    ("GET", "/v1/admin/keys"),
    ("DELETE", "/v1/admin/keys/<key_id>"),
    ("GET", "/v1/admin/audit"),
    ("GET", "/v1/admin/health"),
}
_PARAMETER = re.compile(r"<(?:[^:<>]+:)?([^<>]+)>")


def admin_routes(app: Quart) -> list[tuple[str, str]]:
    """(method, rule) of every HTTP route whose view requires the ``admin`` scope."""
    found = []
    for rule in app.url_map.iter_rules():
        if rule.websocket:
            continue
        view = app.view_functions[rule.endpoint]
        if "admin" in getattr(view, "required_scopes", ()):
            found += [
                (method, rule.rule) for method in sorted(rule.methods or ()) if method not in IGNORED_METHODS
            ]
    return sorted(found)


def filled(rule: str) -> str:
    """The rule with each path parameter set to a random UUID (nothing it could name exists)."""
    return _PARAMETER.sub(lambda _: str(uuid.uuid4()), rule)


async def test_a_members_token_and_api_key_are_refused_on_every_admin_route(
    app: Quart, client: QuartClient, admin: Account, make_user: MakeUser
) -> None:
    member = await make_user()
    created = await client.post(
        "/v1/keys",
        json={"name": "everything I may", "scopes": ["read", "ingest", "chat"]},
        headers=member.headers,
    )
    assert created.status_code == 201
    member_key = (await created.get_json())["key"]
    routes = admin_routes(app)
    assert set(routes) >= KNOWN, sorted(KNOWN - set(routes))

    refused = []
    for method, rule in routes:
        for who, headers in (("token", member.headers), ("api key", bearer(member_key))):
            # An empty JSON body, where a body is read: the refusal must come before its validation.
            options = {"json": {}} if method in {"POST", "PUT", "PATCH"} else {}
            response = await client.open(filled(rule), method=method, headers=headers, **options)
            body = await response.get_json()
            assert response.status_code == 403, (method, rule, who, response.status_code, body)
            assert body["error"]["code"] == "permission_denied", (method, rule, who, body)
            refused.append((method, rule, who))
    assert len(refused) == 2 * len(routes)

    # The admin's own credential gets through the same check on one of them.
    listed = await client.get("/v1/admin/keys", headers=admin.headers)
    assert listed.status_code == 200
