"""``/v1/collections``: create, list, get, update and delete the tenant's collections.

Reading needs the ``read`` scope; creating, changing and deleting a collection need ``ingest``, the
scope that puts content in and takes it out.
"""

from __future__ import annotations

from quart import Blueprint
from quart_schema import tag, validate_querystring, validate_request, validate_response

from opentier.gateway import rpc
from opentier.gateway.errors import documented_errors
from opentier.gateway.principal import require
from opentier.gateway.routes.context import caller, host_client
from opentier.gateway.schemas.collections import (
    Collection,
    CollectionCreate,
    CollectionDeleted,
    CollectionList,
    CollectionUpdate,
)
from opentier.gateway.schemas.common import PageQuery, next_token, struct_of
from opentier.generated.intelligence.v1 import collections_pb2

blueprint = Blueprint("collections", __name__, url_prefix="/v1/collections")
TAGS = ["Collections"]


@blueprint.post("")
@require("ingest")
@tag(TAGS)
@documented_errors(400, 401, 403, 409, 413, 500, 503)
@validate_request(CollectionCreate)
@validate_response(Collection, 201)
async def create_collection(data: CollectionCreate) -> tuple[Collection, int]:
    """Create a collection (scope `ingest`).

    Its name must be unique in your tenant (409 `already_exists` otherwise); its embedder is fixed.
    """
    request = collections_pb2.CreateCollectionRequest(
        name=data.name,
        description=data.description or "",
        metadata=struct_of(data.metadata),
        embedder=data.embedder or "",
    )
    created = await host_client().unary(rpc.CREATE_COLLECTION, request, caller())
    return Collection.from_pb(created), 201


@blueprint.get("")
@require("read")
@tag(TAGS)
@documented_errors(400, 401, 403, 500, 503)
@validate_querystring(PageQuery)
@validate_response(CollectionList)
async def list_collections(query_args: PageQuery) -> CollectionList:
    """List your collections, by name, a page at a time (scope `read`)."""
    request = collections_pb2.ListCollectionsRequest(page=query_args.to_pb())
    response = await host_client().unary(rpc.LIST_COLLECTIONS, request, caller())
    return CollectionList(
        collections=[Collection.from_pb(item) for item in response.collections],
        next_page_token=next_token(response.page),
    )


@blueprint.get("/<collection_id>")
@require("read")
@tag(TAGS)
@documented_errors(400, 401, 403, 404, 500, 503)
@validate_response(Collection)
async def get_collection(collection_id: str) -> Collection:
    """One collection, with its document and chunk counts (scope `read`)."""
    request = collections_pb2.GetCollectionRequest(collection_id=collection_id)
    return Collection.from_pb(await host_client().unary(rpc.GET_COLLECTION, request, caller()))


@blueprint.patch("/<collection_id>")
@require("ingest")
@tag(TAGS)
@documented_errors(400, 401, 403, 404, 409, 413, 500, 503)
@validate_request(CollectionUpdate)
@validate_response(Collection)
async def update_collection(collection_id: str, data: CollectionUpdate) -> Collection:
    """Rename a collection, or change its description or metadata (scope `ingest`).

    Only the fields present change; `metadata` replaces the whole object.
    """
    request = collections_pb2.UpdateCollectionRequest(collection_id=collection_id)
    if data.name is not None:
        request.name = data.name
    if data.description is not None:
        request.description = data.description
    if data.metadata is not None:
        request.metadata.SetInParent()  # present even when empty: an empty object clears the metadata
        request.metadata.CopyFrom(struct_of(data.metadata))
    return Collection.from_pb(await host_client().unary(rpc.UPDATE_COLLECTION, request, caller()))


@blueprint.delete("/<collection_id>")
@require("ingest")
@tag(TAGS)
@documented_errors(400, 401, 403, 404, 500, 503)
@validate_response(CollectionDeleted)
async def delete_collection(collection_id: str) -> CollectionDeleted:
    """Delete a collection with its documents, chunks and jobs (scope `ingest`)."""
    request = collections_pb2.DeleteCollectionRequest(collection_id=collection_id)
    response = await host_client().unary(rpc.DELETE_COLLECTION, request, caller())
    return CollectionDeleted(
        documents_deleted=response.documents_deleted, chunks_deleted=response.chunks_deleted
    )
