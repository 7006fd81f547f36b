"""The gateway's side of the gRPC contract, checked against the contract and the host's own constants,
and the streaming multipart reader on real multipart bodies cut at every size."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from opentier import errors
from opentier.config import GatewaySettings, HostSettings, Settings
from opentier.errors import ConfigError, InvalidRequestError, OpenTierError, SourceTooLargeError
from opentier.gateway import host, host_errors, rpc
from opentier.gateway.errors import STATUS_BY_CODE
from opentier.gateway.uploads import read_upload
from opentier.generated.intelligence.v1 import (
    chat_pb2,
    collections_pb2,
    conversations_pb2,
    documents_pb2,
    ingest_pb2,
    plugins_pb2,
    search_pb2,
    tenants_pb2,
)
from opentier.host import errors as host_side_errors
from opentier.host import token as host_side_token

DESCRIPTORS = [
    chat_pb2,
    collections_pb2,
    conversations_pb2,
    documents_pb2,
    ingest_pb2,
    plugins_pb2,
    search_pb2,
    tenants_pb2,
]


@pytest.mark.parametrize("method", rpc.ALL, ids=lambda method: method.label)
def test_every_method_is_in_the_contract(method: rpc.Method[object, object]) -> None:  # type: ignore[type-var]
    services = {
        service.full_name: service
        for module in DESCRIPTORS
        for service in module.DESCRIPTOR.services_by_name.values()
    }
    service = services[f"{rpc.PACKAGE}.{method.service}"]
    described = service.methods_by_name[method.name]
    assert described.input_type.full_name == method.request.DESCRIPTOR.full_name
    assert described.output_type.full_name == method.response.DESCRIPTOR.full_name
    assert described.server_streaming == method.server_streaming
    assert described.client_streaming == method.client_streaming
    # Only reads are retried.
    assert method.idempotent == method.name.startswith(("Get", "List", "Search", "Describe"))


def test_wire_constants_match_the_host() -> None:
    assert host_errors.ERROR_CODE_KEY == host_side_errors.ERROR_CODE_KEY
    assert host.TOKEN_FILE_NAME == host_side_token.TOKEN_FILE_NAME


def test_every_error_code_maps_back_to_its_class_and_an_http_status() -> None:
    table = host_errors.error_classes()
    for value in vars(errors).values():
        if isinstance(value, type) and issubclass(value, OpenTierError):
            assert issubclass(table[value.code], OpenTierError)
            assert table[value.code].code == value.code
            assert value.code in STATUS_BY_CODE, f"{value.code} has no HTTP status"


def test_the_upload_limit_must_fit_in_one_host_message() -> None:
    settings = Settings(
        host=HostSettings(max_message_bytes=1024 * 1024),
        gateway=GatewaySettings(max_upload_bytes=1024 * 1024),
    )
    with pytest.raises(ConfigError, match=r"gateway\.max_upload_bytes"):
        host.HostClient(settings)


def test_targets_default_to_the_local_host() -> None:
    assert host.host_targets(Settings(host=HostSettings(address="0.0.0.0", port=6000))) == ["127.0.0.1:6000"]
    assert host.host_targets(Settings(host=HostSettings(address="::", port=6000))) == ["[::1]:6000"]
    assert host.host_targets(Settings(host=HostSettings(address="unix:/run/ot.sock"))) == [
        "unix:/run/ot.sock"
    ]
    named = Settings(gateway=GatewaySettings(host_targets=["hosts.internal:50051", "10.0.0.2:50051"]))
    assert host.host_targets(named) == ["hosts.internal:50051", "10.0.0.2:50051"]


def multipart(
    files: dict[str, tuple[str, bytes, str]], data: dict[str, str] | None = None
) -> tuple[bytes, str]:
    """A real multipart body and its Content-Type, as httpx (a client) encodes them."""
    request = httpx.Request("POST", "http://gateway/upload", files=files, data=data)
    return request.read(), request.headers["content-type"]


async def pieces(body: bytes, size: int) -> AsyncIterator[bytes]:
    for start in range(0, len(body), size):
        yield body[start : start + size]


@pytest.mark.parametrize("size", [1, 7, 64, 4096, 1 << 20])
async def test_an_upload_reads_the_same_however_the_body_is_cut(size: int) -> None:
    content = bytes(range(256)) * 40 + b"\r\n--not-the-boundary\r\n" * 3
    body, content_type = multipart(
        {"file": ("report.bin", content, "application/octet-stream")},
        {"metadata": '{"team": "a", "year": 2024}', "force": "true"},
    )
    upload = await read_upload(pieces(body, size), content_type, limit=len(content))
    assert upload.data == content
    assert upload.filename == "report.bin" and upload.media_type == "application/octet-stream"
    assert upload.metadata() == {"team": "a", "year": 2024}
    assert upload.flag("force") is True


async def test_an_upload_reads_the_same_wherever_the_network_cuts_it() -> None:
    """Every way of cutting the end of a body (where the delimiters are) into three pieces, as TCP
    segments might, reads the same."""
    content = b"ends with a line\r\n"
    body, content_type = multipart({"file": ("a.txt", content, "text/plain")}, {"force": "true"})
    tail = range(body.index(content), len(body) + 1)
    for first in tail:
        for second in range(first, len(body) + 1):

            async def cut(first: int = first, second: int = second) -> AsyncIterator[bytes]:
                for piece in (body[:first], body[first:second], body[second:]):
                    if piece:
                        yield piece

            upload = await read_upload(cut(), content_type, limit=100)
            assert (upload.data, upload.fields) == (content, {"force": "true"}), (first, second)


async def test_an_upload_stops_reading_at_the_limit() -> None:
    content = b"x" * 10_000
    body, content_type = multipart({"file": ("big.txt", content, "text/plain")})
    read = 0

    async def counted() -> AsyncIterator[bytes]:
        nonlocal read
        async for piece in pieces(body, 1000):
            read += len(piece)
            yield piece

    with pytest.raises(SourceTooLargeError):
        await read_upload(counted(), content_type, limit=5_000)
    assert read < 7_000  # refused while the rest was still to come


def fields_only(data: dict[str, str]) -> tuple[bytes, str]:
    """A multipart body with form fields and no file (httpx would send such a form url-encoded)."""
    boundary = "fieldsonly"
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
        for name, value in data.items()
    ]
    return ("".join(parts) + f"--{boundary}--\r\n").encode(), f"multipart/form-data; boundary={boundary}"


TEXT_FILE = {"file": ("a.txt", b"a", "text/plain")}


@pytest.mark.parametrize(
    ("encoded", "message"),
    [
        (fields_only({"force": "true"}), "no complete file"),
        (multipart({"document": ("a.txt", b"a", "text/plain")}), "part named `file`"),
        (multipart(TEXT_FILE, {"colour": "blue"}), "unexpected form field"),
        (multipart(TEXT_FILE, {"metadata": "[1, 2]"}), "JSON object"),
        (multipart(TEXT_FILE, {"force": "perhaps"}), "true or false"),
        ((multipart(TEXT_FILE)[0], "application/json"), "multipart/form-data"),
        ((multipart(TEXT_FILE)[0][:-20], multipart(TEXT_FILE)[1]), "malformed multipart body"),
    ],
)
async def test_malformed_uploads_are_invalid_requests(encoded: tuple[bytes, str], message: str) -> None:
    body, content_type = encoded
    with pytest.raises(InvalidRequestError, match=message):
        upload = await read_upload(pieces(body, 100), content_type, limit=1000)
        upload.metadata()
        upload.flag("force")
