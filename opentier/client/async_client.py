"""The async client of an OpenTier gateway (httpx for REST, websockets for chat).

>>> async with AsyncClient("http://127.0.0.1:8000", api_key="otk_...") as client:
...     manuals = await client.create_collection("manuals")
...     job = await client.upload(manuals.id, "wing-design.pdf", on_progress=print)
...     job = await client.wait_for_job(job)
...     hits = await client.search("trailing edge flaps", collection_ids=[manuals.id])
...     answer = await client.ask("How do flaps work?", collection_ids=[manuals.id])
...     print(answer.text, [c.source for c in answer.citations])
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from types import TracebackType
from typing import Any, Literal, Self, TypeVar

import httpx

from opentier.client import calls, models
from opentier.client.answer import Answer
from opentier.client.auth import Credentials, Tokens, TokensCallback
from opentier.client.chat_async import AsyncChatSession, AsyncChatStream, AsyncSSEStream, AsyncWebSocketStream
from opentier.client.common import (
    DEFAULT_TIMEOUT,
    ChatTransport,
    JobProgressCallback,
    base_url_of,
    decode_body,
    job_id_of,
    next_poll,
    user_agent,
)
from opentier.client.errors import AuthenticationError, TransportError, WaitTimeoutError, error_from_body
from opentier.client.multipart import DEFAULT_CHUNK_BYTES, Progress, ProgressCallback, UploadBody

T = TypeVar("T")
P = TypeVar("P")
X = TypeVar("X")


class AsyncClient:
    """A gateway's REST API and chat, for asyncio code.

    Authenticate with an API key (``api_key="otk_..."``), with tokens from an earlier sign-in
    (``tokens=Tokens(...)``), or call :meth:`login`. With tokens, a request answered 401 is tried again
    once after the refresh token got a new pair; ``on_tokens`` is told each new pair (store it: refresh
    tokens rotate). Errors are the typed exceptions of :mod:`opentier.client.errors`.

    ``chat_transport`` chooses how :meth:`chat` and :meth:`ask` stream: ``"websocket"`` (default) or
    ``"sse"``. Use the client in ``async with``, or call :meth:`aclose`.
    """

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        tokens: Tokens | None = None,
        on_tokens: TokensCallback | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        chat_transport: ChatTransport = "websocket",
        headers: dict[str, str] | None = None,
        verify: bool | str = True,
        http_transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = base_url_of(base_url)
        self.chat_transport: ChatTransport = chat_transport
        self.user_agent = user_agent()
        self.credentials = Credentials(api_key=api_key, tokens=tokens, on_tokens=on_tokens)
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
            headers={"User-Agent": self.user_agent, **(headers or {})},
            verify=verify,
            transport=http_transport,
        )
        self._refresh_lock = asyncio.Lock()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    # -- requests -----------------------------------------------------------------------------------

    async def _auth_headers(self) -> dict[str, str]:
        """The credential's headers, its access token renewed first when about to expire."""
        if self.credentials.needs_refresh():
            async with self._refresh_lock:
                if self.credentials.needs_refresh():
                    with contextlib.suppress(AuthenticationError):  # the request then says why
                        await self._refresh()
        return self.credentials.headers()

    async def _refresh_after(self, used: dict[str, str]) -> bool:
        """After a 401 with ``used`` headers: renew the tokens (once for concurrent callers); False when
        there is nothing to renew or the refresh token is refused too."""
        if not self.credentials.refreshable:
            return False
        async with self._refresh_lock:
            if self.credentials.headers() != used:
                return True  # another request renewed them meanwhile
            try:
                await self._refresh()
            except AuthenticationError:
                return False
        return True

    async def _refresh(self) -> None:
        tokens = self.credentials.tokens
        assert tokens is not None and tokens.refresh_token
        body = await self._send(calls.refresh(tokens.refresh_token))
        self.credentials.set_tokens(Tokens.from_response(body))

    async def _request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: calls.Params | None = None,
        headers: dict[str, str] | None = None,
        upload: UploadBody | None = None,
        progress: Progress | None = None,
        anonymous: bool = False,
        stream: bool = False,
    ) -> httpx.Response:
        """Send a request (again once after a 401 that renewed the tokens); raise the typed error of an
        error answer. With ``stream`` the caller reads and closes the response."""
        for attempt in (1, 2):
            sent = {} if anonymous else await self._auth_headers()
            extra = dict(headers or {})
            content = None
            if upload is not None:
                extra.update(upload.headers())
                content = upload.achunks(progress or Progress(None, upload.size))
            request = self._http.build_request(
                method, path, json=json, params=params, headers={**sent, **extra}, content=content
            )
            try:
                response = await self._http.send(request, stream=stream)
            except httpx.TimeoutException as err:
                raise TransportError(f"{method} {path}: no answer from {self.base_url} in time") from err
            except httpx.TransportError as err:
                raise TransportError(f"{method} {path}: cannot reach {self.base_url}: {err}") from None
            if (
                response.status_code == 401
                and attempt == 1
                and not anonymous
                and await self._refresh_after(sent)
            ):
                await response.aclose()
                continue
            if response.is_error:
                try:
                    await response.aread()
                finally:
                    await response.aclose()
                raise error_from_body(
                    response.status_code, decode_body(response), response.headers, fallback=response.text
                )
            return response
        raise AssertionError("unreachable")  # pragma: no cover

    async def send(self, call: calls.Call[T]) -> T:
        """Run one described call (from :mod:`opentier.client.calls` or :mod:`opentier.client.admin`)
        with this client's credential; raise the typed error of an error answer."""
        return await self._send(call)

    async def _send(self, call: calls.Call[T]) -> T:
        response = await self._request(
            call.method, call.path, json=call.json, params=call.params, anonymous=call.anonymous
        )
        return call.parse(decode_body(response))

    async def _walk(
        self, fetch: Callable[[str | None], Awaitable[P]], items: Callable[[P], list[X]]
    ) -> AsyncIterator[X]:
        token: str | None = None
        while True:
            page = await fetch(token)
            for item in items(page):
                yield item
            token = getattr(page, "next_page_token", None)
            if not token:
                return

    # -- identity -----------------------------------------------------------------------------------

    async def login(self, email: str, password: str, *, tenant: str | None = None) -> Tokens:
        """Sign in; the client then uses the token pair (and renews it). Returns the pair."""
        body = await self._send(calls.login(email, password, tenant))
        tokens = Tokens.from_response(body)
        self.credentials.set_tokens(tokens)
        return tokens

    async def logout(self) -> None:
        """End the sign-in session (its refresh and access tokens stop working at once)."""
        tokens = self.credentials.tokens
        if tokens is not None and tokens.refresh_token:
            await self._send(calls.logout(tokens.refresh_token))
        self.credentials.tokens = None

    async def me(self) -> models.Me:
        """Who the credential belongs to, its tenant and scopes."""
        return await self._send(calls.me())

    async def create_api_key(
        self,
        name: str,
        scopes: Sequence[str] = ("read", "ingest", "chat"),
        *,
        expires_in_days: int | None = None,
    ) -> models.NewApiKey:
        """A new API key of the signed-in user; ``key`` is in this answer only."""
        return await self._send(calls.create_api_key(name, scopes, expires_in_days))

    async def list_api_keys(self) -> list[models.ApiKey]:
        return await self._send(calls.list_api_keys())

    async def revoke_api_key(self, key_id: str) -> models.ApiKey:
        return await self._send(calls.revoke_api_key(key_id))

    # -- collections --------------------------------------------------------------------------------

    async def list_collections(
        self, *, page_size: int | None = None, page_token: str | None = None
    ) -> models.CollectionPage:
        """One page of collections, by name."""
        return await self._send(calls.list_collections(page_size, page_token))

    def iter_collections(self, *, page_size: int | None = None) -> AsyncIterator[models.Collection]:
        """Every collection, page after page."""
        return self._walk(
            lambda token: self.list_collections(page_size=page_size, page_token=token),
            lambda page: page.collections,
        )

    async def find_collection(self, name: str) -> models.Collection | None:
        """The collection named ``name``, or ``None``."""
        async for collection in self.iter_collections(page_size=500):
            if collection.name == name:
                return collection
        return None

    async def create_collection(
        self,
        name: str,
        *,
        description: str | None = None,
        metadata: dict[str, Any] | None = None,
        embedder: str | None = None,
    ) -> models.Collection:
        """Create a collection (``already_exists``, 409, when the name is taken)."""
        return await self._send(calls.create_collection(name, description, metadata, embedder))

    async def get_collection(self, collection_id: str) -> models.Collection:
        return await self._send(calls.get_collection(collection_id))

    async def delete_collection(self, collection_id: str) -> models.CollectionDeleted:
        """Delete a collection with its documents, chunks and jobs."""
        return await self._send(calls.delete_collection(collection_id))

    # -- documents and jobs -------------------------------------------------------------------------

    async def upload(
        self,
        collection_id: str,
        source: str | os.PathLike[str] | bytes,
        *,
        filename: str | None = None,
        media_type: str | None = None,
        metadata: dict[str, Any] | None = None,
        force: bool = False,
        loader: str | None = None,
        on_progress: ProgressCallback | None = None,
        chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    ) -> models.Job:
        """Upload a file (a path, or bytes with a ``filename``) into a collection; returns its ingestion
        job at once (follow it with :meth:`wait_for_job`).

        The file is streamed in ``chunk_bytes`` pieces; ``on_progress(sent, total)`` is called as they
        go, ending with ``sent == total``. The filename becomes the document's source: uploading the
        same name again replaces the document when its content changed.
        """
        upload = UploadBody.of(
            source,
            filename=filename,
            media_type=media_type,
            metadata=metadata,
            force=force,
            loader=loader,
            chunk_bytes=chunk_bytes,
        )
        progress = Progress(on_progress, upload.size)
        response = await self._request(
            "POST", calls.upload_path(collection_id), upload=upload, progress=progress
        )
        return calls.parse_accepted(decode_body(response))

    async def ingest_url(
        self,
        collection_id: str,
        url: str,
        *,
        metadata: dict[str, Any] | None = None,
        force: bool = False,
        loader: str | None = None,
    ) -> models.Job:
        """Have the host fetch an http(s) URL into a collection; returns its job."""
        return await self._send(calls.ingest_url(collection_id, url, metadata, force, loader))

    async def list_documents(
        self,
        collection_id: str,
        *,
        status: Sequence[str] | None = None,
        page_size: int | None = None,
        page_token: str | None = None,
    ) -> models.DocumentPage:
        """One page of a collection's documents, by source (``status``: only these statuses)."""
        return await self._send(calls.list_documents(collection_id, page_size, page_token, status))

    def iter_documents(
        self, collection_id: str, *, status: Sequence[str] | None = None
    ) -> AsyncIterator[models.Document]:
        return self._walk(
            lambda token: self.list_documents(collection_id, status=status, page_size=500, page_token=token),
            lambda page: page.documents,
        )

    async def get_document(self, document_id: str) -> models.Document:
        return await self._send(calls.get_document(document_id))

    async def delete_document(self, document_id: str) -> models.DocumentDeleted:
        """Delete a document and its chunks (gone from search at once)."""
        return await self._send(calls.delete_document(document_id))

    async def get_job(self, job_id: str) -> models.Job:
        return await self._send(calls.get_job(job_id))

    async def list_jobs(
        self,
        *,
        collection_id: str | None = None,
        status: Sequence[str] | None = None,
        page_size: int | None = None,
        page_token: str | None = None,
    ) -> models.JobPage:
        return await self._send(calls.list_jobs(collection_id, status, page_size, page_token))

    async def cancel_job(self, job_id: str) -> models.Job:
        return await self._send(calls.cancel_job(job_id))

    async def wait_for_job(
        self,
        job: models.Job | str,
        *,
        on_progress: JobProgressCallback | None = None,
        poll_interval: float = 0.5,
        timeout: float | None = None,  # noqa: ASYNC109
    ) -> models.Job:
        """Poll a job until it finished (succeeded, failed or cancelled) and return it.

        ``on_progress(job)`` sees every state read (``job.progress`` goes from 0 to 1). Raises
        :class:`WaitTimeoutError` after ``timeout`` seconds.
        """
        job_id = job_id_of(job)
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        delay: float | None = None
        while True:
            current = await self.get_job(job_id)
            if on_progress is not None:
                on_progress(current)
            if current.finished:
                return current
            delay = next_poll(delay, poll_interval)
            if deadline is not None:
                left = deadline - loop.time()
                if left <= 0:
                    raise WaitTimeoutError(f"job {job_id} is still {current.status} after {timeout} s")
                delay = min(delay, left)
            await asyncio.sleep(delay)

    # -- search and conversations -------------------------------------------------------------------

    async def search(
        self,
        query: str,
        *,
        collection_ids: Sequence[str] | None = None,
        top_k: int | None = None,
        retriever: str | None = None,
        filters: dict[str, Any] | None = None,
        reranker: str | None = None,
        options: dict[str, Any] | None = None,
    ) -> models.SearchResults:
        """Retrieval without generation: the best chunks for ``query`` (all your collections when
        ``collection_ids`` is empty)."""
        return await self._send(
            calls.search(
                query,
                collection_ids=collection_ids,
                top_k=top_k,
                retriever=retriever,
                filters=filters,
                reranker=reranker,
                options=options,
            )
        )

    async def list_conversations(
        self, *, page_size: int | None = None, page_token: str | None = None
    ) -> models.ConversationPage:
        """One page of your conversations, most recent first."""
        return await self._send(calls.list_conversations(page_size, page_token))

    def iter_conversations(self) -> AsyncIterator[models.Conversation]:
        return self._walk(
            lambda token: self.list_conversations(page_size=500, page_token=token),
            lambda page: page.conversations,
        )

    async def get_conversation(self, conversation_id: str) -> models.ConversationWithMessages:
        """A conversation with its messages and their citations."""
        return await self._send(calls.get_conversation(conversation_id))

    async def delete_conversation(self, conversation_id: str) -> models.ConversationDeleted:
        return await self._send(calls.delete_conversation(conversation_id))

    # -- chat ---------------------------------------------------------------------------------------

    def chat(
        self,
        message: str,
        *,
        conversation_id: str | None = None,
        collection_ids: Sequence[str] | None = None,
        retriever: str | None = None,
        filters: dict[str, Any] | None = None,
        llm: str | None = None,
        top_k: int | None = None,
        options: dict[str, Any] | None = None,
        metadata: dict[str, Any] | None = None,
        transport: ChatTransport | None = None,
    ) -> AsyncChatStream:
        """One chat turn, streamed: an async iterator of typed events (see :mod:`opentier.client.events`).

        Without ``conversation_id`` the turn starts a new conversation (its id is in the ``started``
        event and in ``stream.answer.conversation_id``). A turn refused before it started raises the
        typed error (``NotFoundError`` for an unknown collection, ``QuotaExceededError``...).

        >>> async with client.chat("How do flaps work?", collection_ids=[manuals.id]) as stream:
        ...     async for event in stream:
        ...         if isinstance(event, TokenEvent):
        ...             print(event.text, end="")
        """
        start = calls.chat_start(
            message,
            conversation_id=conversation_id,
            collection_ids=collection_ids,
            retriever=retriever,
            filters=filters,
            llm=llm,
            top_k=top_k,
            options=options,
            metadata=metadata,
        )
        kind: Literal["websocket", "sse"] = transport or self.chat_transport
        if kind == "websocket":
            return AsyncWebSocketStream(self, start)
        if kind == "sse":
            return AsyncSSEStream(self, start)
        raise ValueError(f"unknown chat transport {kind!r}: use 'websocket' or 'sse'")

    def chat_session(self) -> AsyncChatSession:
        """A WebSocket kept open for several turns (``async with``)."""
        return AsyncChatSession(self)

    async def ask(
        self,
        message: str,
        *,
        conversation_id: str | None = None,
        collection_ids: Sequence[str] | None = None,
        retriever: str | None = None,
        filters: dict[str, Any] | None = None,
        llm: str | None = None,
        top_k: int | None = None,
        options: dict[str, Any] | None = None,
        metadata: dict[str, Any] | None = None,
        transport: ChatTransport | None = None,
    ) -> Answer:
        """Ask one question and return the whole :class:`Answer` with its citations.

        A turn that failed after it started raises :class:`ChatError` (with ``.answer``); a cancelled
        one (your token quota ran out) is returned with ``status == "cancelled"``.
        """
        stream = self.chat(
            message,
            conversation_id=conversation_id,
            collection_ids=collection_ids,
            retriever=retriever,
            filters=filters,
            llm=llm,
            top_k=top_k,
            options=options,
            metadata=metadata,
            transport=transport,
        )
        async with stream:
            answer = await stream.collect()
        answer.raise_for_failure()
        return answer
