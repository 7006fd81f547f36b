"""Address verification (``POST /v1/auth/email/verify`` with a mailed token, ``POST
/v1/auth/email/verification`` to be mailed a new link) and the three pages mail links open.

The pages, ``/reset``, ``/invitation`` and ``/verify-email`` (``?token=...``), are small static HTML files
from ``opentier/gateway/web/pages/`` with one plain script that calls the API; they are served like the
chat page (exact names only, ``ETag``, ``Cache-Control: no-cache``) with its security headers (a Content
Security Policy without inline code), and are not in the OpenAPI document. See docs/email.md.
"""

from __future__ import annotations

from datetime import datetime
from importlib.resources import files

from pydantic import BaseModel, Field
from quart import Blueprint, Response, request
from quart_schema import hide, tag, validate_request, validate_response

from opentier.errors import NotFoundError
from opentier.gateway.errors import documented_errors
from opentier.gateway.mail.outbox import serving_outbox
from opentier.gateway.mail.verification import Verifications
from opentier.gateway.origin import request_origin
from opentier.gateway.principal import current_principal, require
from opentier.gateway.routes.web import WEB_FOLDER, WEB_PACKAGE, Asset, load_assets, security_headers
from opentier.gateway.state import gateway_state

blueprint = Blueprint("email_verification", __name__, url_prefix="/v1/auth/email")

#: The pages mail links open, by path, and their files in ``web/pages/``.
PAGES = {"/reset": "reset.html", "/invitation": "invitation.html", "/verify-email": "verify-email.html"}
#: URL prefix of the pages' script and style sheet (``/web/pages/pages.js``).
PAGE_ASSET_PREFIX = "/web/pages"


def blueprints() -> list[Blueprint]:
    return [blueprint, pages_blueprint(load_assets(files(WEB_PACKAGE).joinpath(WEB_FOLDER, "pages")))]


def verifications() -> Verifications:
    """The address verification flow of the serving app."""
    return Verifications(gateway_state().require_identity(), serving_outbox())


class VerifyRequest(BaseModel):
    token: str = Field(max_length=200, description="The `token` parameter of the mailed link.")


class VerifiedOut(BaseModel):
    """The address is verified."""

    email: str
    email_verified: bool
    verified_at: datetime


class VerificationMailed(BaseModel):
    """A new verification link is on its way to the caller's address."""

    email: str
    expires_at: datetime


@blueprint.post("/verify")
@tag(["auth"])
@validate_request(VerifyRequest)
@validate_response(VerifiedOut, 200)
@documented_errors(400, 429)
async def verify(data: VerifyRequest) -> VerifiedOut:
    """Verify an address with the token of the mailed link (once; it expires).

    An unknown, expired or used token is refused with 400 `verification_token_invalid`."""
    verified = await verifications().verify(data.token, request_origin())
    return VerifiedOut(email=verified.email, email_verified=True, verified_at=verified.verified_at)


@blueprint.post("/verification")
@tag(["auth"])
@require()
@validate_response(VerificationMailed, 202)
@documented_errors(401, 403, 409, 429)
async def resend() -> tuple[VerificationMailed, int]:
    """Mail yourself a new verification link; 409 `email_already_verified` when there is no need, 429
    when the last link is younger than `mail.reset_resend_seconds`."""
    sent = await verifications().resend(current_principal())
    return VerificationMailed(email=sent.email, expires_at=sent.expires_at), 202


def _send(asset: Asset) -> Response:
    """``asset``, or 304 when the client's copy (``If-None-Match``) is current."""
    etag = f'"{asset.etag}"'
    matches = [tag.strip().removeprefix("W/") for tag in request.headers.get("If-None-Match", "").split(",")]
    current = etag in matches or "*" in matches
    response = Response(b"" if current else asset.body, status=304 if current else 200)
    response.headers["Content-Type"] = asset.content_type
    response.headers["ETag"] = etag
    response.headers["Cache-Control"] = "no-cache"
    if current:
        del response.headers["Content-Length"]
    return response


def pages_blueprint(assets: dict[str, Asset]) -> Blueprint:
    """The pages mail links open, and their files under ``/web/pages/``."""
    pages = Blueprint("mail_pages", __name__)

    def page_route(path: str, name: str) -> None:
        async def page() -> Response:
            return _send(assets[name])

        endpoint = "page_" + name.removesuffix(".html").replace("-", "_")
        pages.add_url_rule(path, endpoint, hide(page), methods=["GET"])

    for path, name in PAGES.items():
        page_route(path, name)

    @pages.get(f"{PAGE_ASSET_PREFIX}/<string:name>")
    @hide
    async def page_asset(name: str) -> Response:
        found = assets.get(name)
        if found is None or name.endswith(".html"):
            raise NotFoundError(f"the mail pages have no file {name!r}")
        return _send(found)

    @pages.after_request
    async def _headers(response: Response) -> Response:
        return security_headers(response, request.host)

    return pages
