"""CollectionService: a tenant's collections, through :class:`~opentier.engine.collections.Collections`."""

from __future__ import annotations

import grpc.aio

from opentier.engine.collections import Collections
from opentier.generated.intelligence.v1 import collections_pb2, collections_pb2_grpc, common_pb2
from opentier.host.servicers.convert import collection_pb, dict_of, tenant_of


class CollectionServicer(collections_pb2_grpc.CollectionServiceServicer):
    def __init__(self, collections: Collections) -> None:
        self._collections = collections

    async def CreateCollection(
        self, request: collections_pb2.CreateCollectionRequest, context: grpc.aio.ServicerContext
    ) -> collections_pb2.Collection:
        info = await self._collections.create(
            tenant_of(request.caller),
            request.name,
            description=request.description or None,
            metadata=dict_of(request.metadata),
            embedder=request.embedder or None,
        )
        return collection_pb(info)

    async def GetCollection(
        self, request: collections_pb2.GetCollectionRequest, context: grpc.aio.ServicerContext
    ) -> collections_pb2.Collection:
        return collection_pb(await self._collections.get(tenant_of(request.caller), request.collection_id))

    async def ListCollections(
        self, request: collections_pb2.ListCollectionsRequest, context: grpc.aio.ServicerContext
    ) -> collections_pb2.ListCollectionsResponse:
        page = await self._collections.list(
            tenant_of(request.caller), request.page.page_size, request.page.page_token
        )
        return collections_pb2.ListCollectionsResponse(
            collections=[collection_pb(info) for info in page.items],
            page=common_pb2.PageResponse(next_page_token=page.next_token),
        )

    async def UpdateCollection(
        self, request: collections_pb2.UpdateCollectionRequest, context: grpc.aio.ServicerContext
    ) -> collections_pb2.Collection:
        info = await self._collections.update(
            tenant_of(request.caller),
            request.collection_id,
            name=request.name if request.HasField("name") else None,
            description=request.description if request.HasField("description") else None,
            metadata=dict_of(request.metadata) if request.HasField("metadata") else None,
        )
        return collection_pb(info)

    async def DeleteCollection(
        self, request: collections_pb2.DeleteCollectionRequest, context: grpc.aio.ServicerContext
    ) -> collections_pb2.DeleteCollectionResponse:
        documents, chunks = await self._collections.delete(tenant_of(request.caller), request.collection_id)
        return collections_pb2.DeleteCollectionResponse(documents_deleted=documents, chunks_deleted=chunks)
