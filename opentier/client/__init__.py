"""The Python client of an OpenTier gateway: REST calls, uploads with progress, chat streams.

It speaks only the gateway's public API (HTTP, the WebSocket ``/v1/chat/ws``, SSE), so it runs anywhere
the gateway can be reached; it never imports the gateway's or the host's code. :class:`AsyncClient` is
for asyncio code, :class:`Client` blocks. Both have the same methods::

    from opentier.client import Client, TokenEvent

    with Client("http://127.0.0.1:8000", api_key="otk_...") as client:
        manuals = client.create_collection("manuals")
        job = client.wait_for_job(client.upload(manuals.id, "wing-design.pdf"))
        for event in client.chat("How do flaps work?", collection_ids=[manuals.id]):
            if isinstance(event, TokenEvent):
                print(event.text, end="", flush=True)

See docs/client.md.
"""

from __future__ import annotations

from opentier.client.answer import Answer
from opentier.client.async_client import AsyncClient
from opentier.client.auth import Tokens
from opentier.client.chat_async import AsyncChatSession, AsyncChatStream
from opentier.client.chat_sync import ChatSession, ChatStream
from opentier.client.errors import (
    APIError,
    AuthenticationError,
    BadRequestError,
    ChatError,
    ClientError,
    ConflictError,
    NotFoundError,
    PayloadTooLargeError,
    PermissionDeniedError,
    ProtocolError,
    QuotaExceededError,
    RateLimitedError,
    ServerError,
    ServiceUnavailableError,
    TransportError,
    UnprocessableError,
    WaitTimeoutError,
)
from opentier.client.events import (
    ChatEvent,
    CitationEvent,
    DoneEvent,
    ErrorEvent,
    QuotaEvent,
    RetrievalEvent,
    StartedEvent,
    TokenEvent,
    UnknownEvent,
    UsageEvent,
)
from opentier.client.models import (
    Citation,
    Collection,
    Conversation,
    Document,
    Job,
    Me,
    Message,
    SearchHit,
    SearchResults,
)
from opentier.client.sync_client import Client

__all__ = [
    "APIError",
    "Answer",
    "AsyncChatSession",
    "AsyncChatStream",
    "AsyncClient",
    "AuthenticationError",
    "BadRequestError",
    "ChatError",
    "ChatEvent",
    "ChatSession",
    "ChatStream",
    "Citation",
    "CitationEvent",
    "Client",
    "ClientError",
    "Collection",
    "ConflictError",
    "Conversation",
    "Document",
    "DoneEvent",
    "ErrorEvent",
    "Job",
    "Me",
    "Message",
    "NotFoundError",
    "PayloadTooLargeError",
    "PermissionDeniedError",
    "ProtocolError",
    "QuotaEvent",
    "QuotaExceededError",
    "RateLimitedError",
    "RetrievalEvent",
    "SearchHit",
    "SearchResults",
    "ServerError",
    "ServiceUnavailableError",
    "StartedEvent",
    "TokenEvent",
    "Tokens",
    "TransportError",
    "UnknownEvent",
    "UnprocessableError",
    "UsageEvent",
    "WaitTimeoutError",
]
