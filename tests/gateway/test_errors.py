"""The one error shape, request ids, the status table, the JWT secret rule, and the OpenAPI check itself."""

from __future__ import annotations

import logging

import pytest
from quart import Quart
from quart.testing import QuartClient

from opentier import errors
from opentier.config import GatewaySettings, Settings
from opentier.errors import ConfigError, OpenTierError
from opentier.gateway.app import create_app
from opentier.gateway.errors import STATUS_BY_CODE, status_for
from tests.gateway.conftest import Account, OpenAPIClient


async def test_unknown_route_and_method_get_the_json_shape(client: QuartClient) -> None:
    missing = await client.get("/v1/nothing-here")
    assert missing.status_code == 404
    body = await missing.get_json()
    assert body["error"]["code"] == "not_found"
    assert body["error"]["request_id"] == missing.headers["X-Request-ID"]
    wrong_method = await client.put("/v1/auth/login")
    assert wrong_method.status_code == 405
    assert (await wrong_method.get_json())["error"]["code"] == "method_not_allowed"


async def test_a_sane_request_id_is_kept_and_a_bad_one_replaced(client: QuartClient) -> None:
    kept = await client.get("/v1/auth/me", headers={"X-Request-ID": "client-id-123"})
    assert kept.headers["X-Request-ID"] == "client-id-123"
    assert (await kept.get_json())["error"]["request_id"] == "client-id-123"
    replaced = await client.get("/v1/auth/me", headers={"X-Request-ID": "bad id <script>" + "x" * 200})
    assert replaced.headers["X-Request-ID"] != "bad id <script>" + "x" * 200
    assert len(replaced.headers["X-Request-ID"]) == 32


async def test_a_body_that_is_not_json_is_a_400_in_the_shape(client: QuartClient) -> None:
    response = await client.post(
        "/v1/auth/login", data=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400
    assert (await response.get_json())["error"]["code"] == "invalid_request"


async def test_unexpected_errors_are_500_internal_and_leak_nothing(
    gateway_settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    app = create_app(gateway_settings)

    @app.get("/boom")
    async def boom() -> str:
        raise RuntimeError("secret detail: db password hunter2")

    async with app.test_app():
        with caplog.at_level(logging.ERROR):
            response = await app.test_client().get("/boom")
    assert response.status_code == 500
    body = await response.get_json()
    assert body["error"]["code"] == "internal"
    assert "hunter2" not in str(body) and "RuntimeError" not in str(body)
    assert "hunter2" in caplog.text  # the details go to the log, for the operator


async def test_host_unavailable_and_rate_limits_carry_retry_after(gateway_settings: Settings) -> None:
    app = create_app(gateway_settings)

    @app.get("/down")
    async def down() -> str:
        raise errors.HostUnavailableError("the intelligence host is unavailable", retry_after=7)

    async with app.test_app():
        response = await app.test_client().get("/down")
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "7"
    assert (await response.get_json())["error"]["code"] == "host_unavailable"


def test_every_error_code_has_a_status() -> None:
    classes = [
        value
        for value in vars(errors).values()
        if isinstance(value, type) and issubclass(value, OpenTierError)
    ]
    codes = {cls.code for cls in classes}
    assert codes <= set(STATUS_BY_CODE), sorted(codes - set(STATUS_BY_CODE))
    assert status_for(errors.NotFoundError("x")) == 404
    assert status_for(errors.PermissionDeniedError("x")) == 403
    assert status_for(errors.LLMRateLimitedError("x")) == 429

    class Future(OpenTierError):  # a code added later still maps through its gRPC status
        code = "something_new"
        grpc_status = "NOT_FOUND"

    assert status_for(Future("x")) == 404


def test_the_gateway_refuses_to_start_without_a_jwt_secret_outside_development(db_settings: Settings) -> None:
    production = db_settings.model_copy(update={"environment": "production", "gateway": GatewaySettings()})
    with pytest.raises(ConfigError, match="OPENTIER_GATEWAY__JWT_SECRET"):
        create_app(production)
    short = production.model_copy(update={"gateway": GatewaySettings(jwt_secret="too-short-a-secret")})
    with pytest.raises(ConfigError, match="at least 32 bytes"):
        create_app(short)


def test_development_gets_an_ephemeral_secret_with_a_warning(
    db_settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        first = create_app(db_settings.model_copy(update={"gateway": GatewaySettings()}))
        second = create_app(db_settings.model_copy(update={"gateway": GatewaySettings()}))
    assert "ephemeral" in caplog.text
    assert isinstance(first, Quart)
    assert first.extensions["opentier"].jwt_secret != second.extensions["opentier"].jwt_secret


async def test_the_openapi_check_catches_an_undocumented_response(api: OpenAPIClient, admin: Account) -> None:
    # the control for every `api` call in these tests: a response the document does not allow is caught
    with pytest.raises(AssertionError, match=r"does not match /openapi\.json"):
        await api.get("/v1/nothing-here")
    with pytest.raises(AssertionError, match=r"does not match /openapi\.json"):
        await api.request("PUT", "/v1/auth/login")  # 405 is not a documented response of this path


async def test_the_openapi_document_describes_security_and_errors(client: QuartClient) -> None:
    spec = await (await client.get("/openapi.json")).get_json()
    me = spec["paths"]["/v1/auth/me"]["get"]
    assert me["security"] == [{"bearer": []}, {"apiKey": []}]
    assert set(me["responses"]) >= {"200", "401", "403"}
    assert me["responses"]["401"]["content"]["application/json"]["schema"]["title"] == "ErrorBody"
    login = spec["paths"]["/v1/auth/login"]["post"]
    assert "security" not in login
    docs = await client.get("/docs")
    assert docs.status_code == 200
