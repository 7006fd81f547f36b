"""The local commands' gRPC client of the host: its address, token, caller, deadlines and errors.

Commands such as ``opentier ingest`` talk to the running host like the gateway does, through the
contract; they read the database only to find the gateway's id of the tenant they act for
(:mod:`opentier.cli.tenants`). Calls act as the tenant ``default`` and user ``cli`` unless
``--tenant`` (or ``OPENTIER_TENANT``) names another tenant. A failed call raises the
:class:`~opentier.errors.OpenTierError` named by the host's ``opentier-error-code``, so the CLI
prints it like a local error.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from types import TracebackType
from typing import Any, TypeVar

import click
import grpc
import grpc.aio
from click.core import ParameterSource

from opentier.cli.tenants import host_tenant_id
from opentier.config import Settings, env_name
from opentier.errors import ConfigError, NotFoundError, OpenTierError
from opentier.generated.intelligence.v1 import (
    chat_pb2_grpc,
    collections_pb2,
    collections_pb2_grpc,
    common_pb2,
    conversations_pb2_grpc,
    documents_pb2,
    documents_pb2_grpc,
    ingest_pb2,
    ingest_pb2_grpc,
    search_pb2_grpc,
)
from opentier.host.auth import bearer_metadata
from opentier.host.errors import ERROR_CODE_KEY
from opentier.host.server import client_target
from opentier.host.token import token_path

DEFAULT_TENANT = "default"
CLI_USER = "cli"
TENANT_ENV = "OPENTIER_TENANT"
#: Deadline of each unary call; streams (ingestion) have none, they last as long as the job.
DEADLINE_SECONDS = 30.0
PAGE_SIZE = 200

F = TypeVar("F", bound=Callable[..., Any])
Request = TypeVar("Request")
Response = TypeVar("Response")


class HostUnreachableError(OpenTierError):
    """The local host does not run, or does not answer in time."""

    code = "host_unreachable"
    grpc_status = "UNAVAILABLE"


def tenant_option(command: F) -> F:
    """``--tenant``: the tenant a command acts for; a group's ``--tenant`` applies to its subcommands."""
    option = click.option(
        "--tenant",
        envvar=TENANT_ENV,
        callback=_inherit_tenant,
        show_default=DEFAULT_TENANT,
        metavar="TENANT",
        help=f"Tenant to act for (also ${TENANT_ENV}).",
    )
    return option(command)


def _inherit_tenant(ctx: click.Context, param: click.Parameter, value: str | None) -> str:
    """A ``--tenant`` typed on the command wins, then one typed on a group, then the environment."""
    if param.name and ctx.get_parameter_source(param.name) is ParameterSource.COMMANDLINE:
        return value or DEFAULT_TENANT
    parent = ctx.parent
    while parent is not None:
        if parent.get_parameter_source("tenant") is ParameterSource.COMMANDLINE:
            return str(parent.params["tenant"])
        parent = parent.parent
    return value or DEFAULT_TENANT


def read_token(settings: Settings) -> str:
    """The host token the local host uses: the setting, else ``<data_dir>/host.token`` (never created)."""
    if settings.host.token is not None and settings.host.token.get_secret_value().strip():
        return settings.host.token.get_secret_value().strip()
    path = token_path(settings)
    try:
        token = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        raise HostUnreachableError(
            f"no host token in {path}: no host has run with this data folder; start one with "
            f"`opentier up` (or `opentier host serve`), or set {env_name('host.token')}"
        ) from None
    except PermissionError:
        raise ConfigError(f"cannot read the host token {path}: run as the user that runs the host") from None
    if not token:
        raise ConfigError(f"the host token file {path} is empty")
    return token


def remote_error(err: grpc.aio.AioRpcError, target: str) -> OpenTierError:
    """The OpenTier error a failed call stands for."""
    code = next((str(value) for key, value in err.trailing_metadata() or () if key == ERROR_CODE_KEY), None)
    details = err.details() or err.code().name
    if code is None and err.code() == grpc.StatusCode.UNAVAILABLE:
        return HostUnreachableError(
            f"the OpenTier host at {target} is not reachable: is it running? Start it with `opentier up` "
            f"(or `opentier host serve`). ({details})"
        )
    if code is None and err.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
        return HostUnreachableError(f"the OpenTier host at {target} did not answer in time")
    if code is None and err.code() == grpc.StatusCode.UNIMPLEMENTED:
        return HostUnreachableError(
            f"the host at {target} does not serve this call ({details}): it may be an older version"
        )
    error_class = _error_classes().get(code or "") or _remote_error_class(code or OpenTierError.code)
    try:
        return error_class(details)
    except TypeError:  # a class with another constructor: keep the code and the message
        return _remote_error_class(error_class.code)(details)


def _remote_error_class(code: str) -> type[OpenTierError]:
    """An error class for a code this client does not know (a newer host, a plugin's error)."""
    made: type[OpenTierError] = type("RemoteError", (OpenTierError,), {"code": code})
    return made


@functools.cache
def _error_classes() -> dict[str, type[OpenTierError]]:
    found: dict[str, type[OpenTierError]] = {}
    pending: list[type[OpenTierError]] = [OpenTierError]
    while pending:
        cls = pending.pop()
        found.setdefault(cls.code, cls)
        pending.extend(cls.__subclasses__())
    return found


class HostClient:
    """One channel to the local host with the stubs of the data services (``async with``)."""

    def __init__(
        self,
        settings: Settings,
        *,
        tenant: str = DEFAULT_TENANT,
        user: str = CLI_USER,
        deadline: float = DEADLINE_SECONDS,
    ) -> None:
        if not tenant.strip():
            raise click.BadParameter("the tenant must not be empty", param_hint="--tenant")
        self.settings = settings
        #: The tenant as the user named it (the Caller gets the gateway's id of it, see __aenter__).
        self.tenant = tenant
        self.target = client_target(settings.host.address, settings.host.port)
        self.deadline = deadline
        self.caller = common_pb2.Caller(tenant_id=tenant, user_id=user, request_id=uuid.uuid4().hex)
        self._metadata = bearer_metadata(read_token(settings))
        self._channel: grpc.aio.Channel | None = None

    async def __aenter__(self) -> HostClient:
        self.caller.tenant_id = await host_tenant_id(self.settings, self.tenant)
        limit = self.settings.host.max_message_bytes
        self._channel = grpc.aio.insecure_channel(
            self.target,
            options=[("grpc.max_send_message_length", limit), ("grpc.max_receive_message_length", limit)],
        )
        self.collections = collections_pb2_grpc.CollectionServiceStub(self._channel)
        self.documents = documents_pb2_grpc.DocumentServiceStub(self._channel)
        self.ingest = ingest_pb2_grpc.IngestServiceStub(self._channel)
        self.search = search_pb2_grpc.SearchServiceStub(self._channel)
        self.chat = chat_pb2_grpc.ChatServiceStub(self._channel)
        self.conversations = conversations_pb2_grpc.ConversationServiceStub(self._channel)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._channel is not None:
            await self._channel.close()

    # -- calling --------------------------------------------------------------------------------

    async def call(self, method: Callable[..., Awaitable[Response]], request: Any) -> Response:
        """A unary call with the token and the deadline; failures become OpenTier errors."""
        try:
            return await method(request, metadata=self._metadata, timeout=self.deadline)
        except grpc.aio.AioRpcError as err:
            raise remote_error(err, self.target) from None

    async def stream(self, method: Callable[..., Any], request: Any) -> AsyncIterator[Any]:
        """The events of a server-streaming call, without deadline; failures become OpenTier errors."""
        try:
            async for event in method(request, metadata=self._metadata):
                yield event
        except grpc.aio.AioRpcError as err:
            raise remote_error(err, self.target) from None

    def open_stream(self, method: Callable[..., Any], requests: AsyncIterator[Any]) -> Any:
        """A client-streaming call (no deadline); await it, or its ``initial_metadata()``."""
        return method(requests, metadata=self._metadata)

    # -- conveniences ---------------------------------------------------------------------------

    async def all_collections(self) -> list[collections_pb2.Collection]:
        found: list[collections_pb2.Collection] = []
        token = ""
        while True:
            page = await self.call(
                self.collections.ListCollections,
                collections_pb2.ListCollectionsRequest(
                    caller=self.caller, page=common_pb2.PageRequest(page_size=PAGE_SIZE, page_token=token)
                ),
            )
            found.extend(page.collections)
            token = page.page.next_page_token
            if not token:
                return found

    async def collection_named(self, name: str) -> collections_pb2.Collection:
        """The tenant's collection called ``name`` (the contract addresses collections by id)."""
        for collection in await self.all_collections():
            if collection.name == name:
                return collection
        raise NotFoundError(
            f"tenant {self.tenant!r} has no collection named {name!r}; `opentier collections` lists them"
        )

    async def documents_of(
        self, collection_id: str, statuses: list[documents_pb2.DocumentStatus.ValueType] | None = None
    ) -> AsyncIterator[documents_pb2.Document]:
        token = ""
        while True:
            page = await self.call(
                self.documents.ListDocuments,
                documents_pb2.ListDocumentsRequest(
                    caller=self.caller,
                    collection_id=collection_id,
                    statuses=statuses or [],
                    page=common_pb2.PageRequest(page_size=PAGE_SIZE, page_token=token),
                ),
            )
            for document in page.documents:
                yield document
            token = page.page.next_page_token
            if not token:
                return

    async def job(self, job_id: str) -> ingest_pb2.IngestJob:
        request = ingest_pb2.GetJobRequest(caller=self.caller, job_id=job_id)
        job: ingest_pb2.IngestJob = await self.call(self.ingest.GetJob, request)
        return job
