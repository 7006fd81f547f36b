"""The REST calls, described once (method, path, body, how to read the answer) and run by both the async
and the sync client, so the two cannot drift apart."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar
from urllib.parse import quote

from pydantic import BaseModel

from opentier.client import models

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)

Params = Mapping[str, str | int | Sequence[str]]


@dataclass(frozen=True)
class Call(Generic[T]):
    """One HTTP request and the reading of its (successful) answer."""

    method: str
    path: str
    parse: Callable[[Any], T]
    json: Any = None
    params: Params = field(default_factory=dict)
    #: Sent without the client's credential (sign-in, refresh).
    anonymous: bool = False


def _model(cls: type[M]) -> Callable[[Any], M]:
    return cls.model_validate


def _nothing(_: Any) -> None:
    return None


def _segment(value: str) -> str:
    """An id as one path segment (an id with a ``/`` must not reach another route)."""
    return quote(str(value), safe="")


def _page(page_size: int | None, page_token: str | None, **more: Any) -> dict[str, Any]:
    params: dict[str, Any] = {key: value for key, value in more.items() if value not in (None, "", [], ())}
    if page_size is not None:
        params["page_size"] = page_size
    if page_token:
        params["page_token"] = page_token
    return params


def _body(**fields: Any) -> dict[str, Any]:
    """A JSON body without the fields left unset (the gateway applies its defaults)."""
    return {key: value for key, value in fields.items() if value is not None}


# -- identity ---------------------------------------------------------------------------------------


def login(email: str, password: str, tenant: str | None) -> Call[dict[str, Any]]:
    return Call(
        "POST",
        "/v1/auth/login",
        dict,
        json=_body(email=email, password=password, tenant=tenant),
        anonymous=True,
    )


def refresh(refresh_token: str) -> Call[dict[str, Any]]:
    return Call("POST", "/v1/auth/refresh", dict, json={"refresh_token": refresh_token}, anonymous=True)


def logout(refresh_token: str) -> Call[None]:
    return Call("POST", "/v1/auth/logout", _nothing, json={"refresh_token": refresh_token}, anonymous=True)


def me() -> Call[models.Me]:
    return Call("GET", "/v1/auth/me", _model(models.Me))


def create_api_key(name: str, scopes: Sequence[str], expires_in_days: int | None) -> Call[models.NewApiKey]:
    body = _body(name=name, scopes=list(scopes), expires_in_days=expires_in_days)
    return Call("POST", "/v1/keys", _model(models.NewApiKey), json=body)


def list_api_keys() -> Call[list[models.ApiKey]]:
    def parse(body: Any) -> list[models.ApiKey]:
        items = body.get("keys", body) if isinstance(body, dict) else body
        return [models.ApiKey.model_validate(item) for item in items]

    return Call("GET", "/v1/keys", parse)


def revoke_api_key(key_id: str) -> Call[models.ApiKey]:
    return Call("DELETE", f"/v1/keys/{_segment(key_id)}", _model(models.ApiKey))


# -- collections ------------------------------------------------------------------------------------


def list_collections(page_size: int | None, page_token: str | None) -> Call[models.CollectionPage]:
    return Call("GET", "/v1/collections", _model(models.CollectionPage), params=_page(page_size, page_token))


def create_collection(
    name: str, description: str | None, metadata: dict[str, Any] | None, embedder: str | None
) -> Call[models.Collection]:
    body = _body(name=name, description=description, metadata=metadata, embedder=embedder)
    return Call("POST", "/v1/collections", _model(models.Collection), json=body)


def get_collection(collection_id: str) -> Call[models.Collection]:
    return Call("GET", f"/v1/collections/{_segment(collection_id)}", _model(models.Collection))


def delete_collection(collection_id: str) -> Call[models.CollectionDeleted]:
    return Call("DELETE", f"/v1/collections/{_segment(collection_id)}", _model(models.CollectionDeleted))


# -- documents and jobs -----------------------------------------------------------------------------


def upload_path(collection_id: str) -> str:
    return f"/v1/collections/{_segment(collection_id)}/documents"


def parse_accepted(body: Any) -> models.Job:
    """The job of a 202 upload answer (``{"job": {...}}``)."""
    return models.Job.model_validate(body["job"])


def ingest_url(
    collection_id: str, url: str, metadata: dict[str, Any] | None, force: bool, loader: str | None
) -> Call[models.Job]:
    body = _body(url=url, metadata=metadata, force=force, loader=loader)
    return Call("POST", f"{upload_path(collection_id)}/url", parse_accepted, json=body)


def list_documents(
    collection_id: str, page_size: int | None, page_token: str | None, status: Sequence[str] | None
) -> Call[models.DocumentPage]:
    params = _page(page_size, page_token, status=",".join(status) if status else None)
    return Call("GET", upload_path(collection_id), _model(models.DocumentPage), params=params)


def get_document(document_id: str) -> Call[models.Document]:
    return Call("GET", f"/v1/documents/{_segment(document_id)}", _model(models.Document))


def delete_document(document_id: str) -> Call[models.DocumentDeleted]:
    return Call("DELETE", f"/v1/documents/{_segment(document_id)}", _model(models.DocumentDeleted))


def get_job(job_id: str) -> Call[models.Job]:
    return Call("GET", f"/v1/jobs/{_segment(job_id)}", _model(models.Job))


def list_jobs(
    collection_id: str | None, status: Sequence[str] | None, page_size: int | None, page_token: str | None
) -> Call[models.JobPage]:
    params = _page(
        page_size, page_token, collection_id=collection_id, status=",".join(status) if status else None
    )
    return Call("GET", "/v1/jobs", _model(models.JobPage), params=params)


def cancel_job(job_id: str) -> Call[models.Job]:
    return Call("POST", f"/v1/jobs/{_segment(job_id)}/cancel", _model(models.Job))


# -- search and conversations -----------------------------------------------------------------------


def search(
    query: str,
    *,
    collection_ids: Sequence[str] | None,
    top_k: int | None,
    retriever: str | None,
    filters: dict[str, Any] | None,
    reranker: str | None,
    options: dict[str, Any] | None,
) -> Call[models.SearchResults]:
    body = _body(
        query=query,
        collection_ids=list(collection_ids) if collection_ids else None,
        top_k=top_k,
        retriever=retriever,
        filters=filters,
        reranker=reranker,
        options=options,
    )
    return Call("POST", "/v1/search", _model(models.SearchResults), json=body)


def list_conversations(page_size: int | None, page_token: str | None) -> Call[models.ConversationPage]:
    return Call(
        "GET", "/v1/conversations", _model(models.ConversationPage), params=_page(page_size, page_token)
    )


def get_conversation(conversation_id: str) -> Call[models.ConversationWithMessages]:
    return Call(
        "GET", f"/v1/conversations/{_segment(conversation_id)}", _model(models.ConversationWithMessages)
    )


def delete_conversation(conversation_id: str) -> Call[models.ConversationDeleted]:
    return Call(
        "DELETE", f"/v1/conversations/{_segment(conversation_id)}", _model(models.ConversationDeleted)
    )


# -- chat -------------------------------------------------------------------------------------------


def chat_start(
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
) -> dict[str, Any]:
    """The fields of a turn's start (the WebSocket ``start`` message, the SSE request body)."""
    return _body(
        message=message,
        conversation_id=conversation_id,
        collection_ids=list(collection_ids) if collection_ids else None,
        retriever=retriever,
        filters=filters,
        llm=llm,
        top_k=top_k,
        options=options,
        metadata=metadata,
    )
