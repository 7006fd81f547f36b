"""The host methods the gateway calls, each declared once with its message types and whether it is
idempotent (only those are retried).

The gateway calls the host through these descriptors rather than through generated stubs, so that one
table says which calls may be repeated, and the pool can open the call on whichever channel is next.
A test checks every entry against the contract's descriptors.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from google.protobuf.message import Message

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

PACKAGE = "opentier.intelligence.v1"

Req = TypeVar("Req", bound=Message)
Resp = TypeVar("Resp", bound=Message)


@dataclass(frozen=True)
class Method(Generic[Req, Resp]):
    """One RPC of the contract: ``/<package>.<service>/<name>``."""

    service: str
    name: str
    request: type[Req]
    response: type[Resp]
    #: Repeating the call cannot change anything (gets, lists, search): it may be retried.
    idempotent: bool = False
    #: The host answers with a stream of ``response`` messages.
    server_streaming: bool = False
    #: The gateway sends a stream of ``request`` messages (with ``server_streaming``: bidirectional).
    client_streaming: bool = False

    @property
    def path(self) -> str:
        return f"/{PACKAGE}.{self.service}/{self.name}"

    @property
    def label(self) -> str:
        """Short name for metrics and spans: ``CollectionService/GetCollection``."""
        return f"{self.service}/{self.name}"


def _unary(
    service: str, name: str, request: type[Req], response: type[Resp], *, idempotent: bool
) -> Method[Req, Resp]:
    return Method(service, name, request, response, idempotent=idempotent)


CREATE_COLLECTION = _unary(
    "CollectionService",
    "CreateCollection",
    collections_pb2.CreateCollectionRequest,
    collections_pb2.Collection,
    idempotent=False,
)
GET_COLLECTION = _unary(
    "CollectionService",
    "GetCollection",
    collections_pb2.GetCollectionRequest,
    collections_pb2.Collection,
    idempotent=True,
)
LIST_COLLECTIONS = _unary(
    "CollectionService",
    "ListCollections",
    collections_pb2.ListCollectionsRequest,
    collections_pb2.ListCollectionsResponse,
    idempotent=True,
)
UPDATE_COLLECTION = _unary(
    "CollectionService",
    "UpdateCollection",
    collections_pb2.UpdateCollectionRequest,
    collections_pb2.Collection,
    idempotent=False,
)
DELETE_COLLECTION = _unary(
    "CollectionService",
    "DeleteCollection",
    collections_pb2.DeleteCollectionRequest,
    collections_pb2.DeleteCollectionResponse,
    idempotent=False,
)

LIST_DOCUMENTS = _unary(
    "DocumentService",
    "ListDocuments",
    documents_pb2.ListDocumentsRequest,
    documents_pb2.ListDocumentsResponse,
    idempotent=True,
)
GET_DOCUMENT = _unary(
    "DocumentService",
    "GetDocument",
    documents_pb2.GetDocumentRequest,
    documents_pb2.Document,
    idempotent=True,
)
DELETE_DOCUMENT = _unary(
    "DocumentService",
    "DeleteDocument",
    documents_pb2.DeleteDocumentRequest,
    documents_pb2.DeleteDocumentResponse,
    idempotent=False,
)

INGEST: Method[ingest_pb2.IngestRequest, ingest_pb2.IngestEvent] = Method(
    "IngestService", "Ingest", ingest_pb2.IngestRequest, ingest_pb2.IngestEvent, server_streaming=True
)
GET_JOB = _unary("IngestService", "GetJob", ingest_pb2.GetJobRequest, ingest_pb2.IngestJob, idempotent=True)
LIST_JOBS = _unary(
    "IngestService", "ListJobs", ingest_pb2.ListJobsRequest, ingest_pb2.ListJobsResponse, idempotent=True
)
CANCEL_JOB = _unary(
    "IngestService", "CancelJob", ingest_pb2.CancelJobRequest, ingest_pb2.IngestJob, idempotent=False
)

SEARCH = _unary(
    "SearchService", "Search", search_pb2.SearchRequest, search_pb2.SearchResponse, idempotent=True
)

LIST_CONVERSATIONS = _unary(
    "ConversationService",
    "ListConversations",
    conversations_pb2.ListConversationsRequest,
    conversations_pb2.ListConversationsResponse,
    idempotent=True,
)
GET_CONVERSATION = _unary(
    "ConversationService",
    "GetConversation",
    conversations_pb2.GetConversationRequest,
    conversations_pb2.GetConversationResponse,
    idempotent=True,
)
DELETE_CONVERSATION = _unary(
    "ConversationService",
    "DeleteConversation",
    conversations_pb2.DeleteConversationRequest,
    conversations_pb2.DeleteConversationResponse,
    idempotent=False,
)

#: What the host loaded and what failed to load (the admin health route).
LIST_PLUGINS = _unary(
    "PluginService",
    "ListPlugins",
    plugins_pb2.ListPluginsRequest,
    plugins_pb2.ListPluginsResponse,
    idempotent=True,
)

#: A tenant's data on the host, for the operator (caller scopes must hold ``admin``).
DESCRIBE_TENANT_DATA = _unary(
    "TenantData",
    "DescribeTenantData",
    tenants_pb2.TenantDataRequest,
    tenants_pb2.TenantDataCounts,
    idempotent=True,
)
PURGE_TENANT_DATA = _unary(
    "TenantData",
    "PurgeTenantData",
    tenants_pb2.TenantDataRequest,
    tenants_pb2.TenantDataCounts,
    idempotent=False,
)

#: One chat turn: ``start`` (then maybe ``cancel``) in, the turn's events out.
CHAT: Method[chat_pb2.ChatRequest, chat_pb2.ChatEvent] = Method(
    "ChatService",
    "Chat",
    chat_pb2.ChatRequest,
    chat_pb2.ChatEvent,
    server_streaming=True,
    client_streaming=True,
)

#: Every method above (the contract test walks it).
ALL: tuple[Method[Any, Any], ...] = (
    CREATE_COLLECTION,
    GET_COLLECTION,
    LIST_COLLECTIONS,
    UPDATE_COLLECTION,
    DELETE_COLLECTION,
    LIST_DOCUMENTS,
    GET_DOCUMENT,
    DELETE_DOCUMENT,
    INGEST,
    GET_JOB,
    LIST_JOBS,
    CANCEL_JOB,
    SEARCH,
    LIST_CONVERSATIONS,
    GET_CONVERSATION,
    DELETE_CONVERSATION,
    LIST_PLUGINS,
    DESCRIBE_TENANT_DATA,
    PURGE_TENANT_DATA,
    CHAT,
)
