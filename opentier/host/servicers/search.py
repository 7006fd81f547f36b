"""SearchService: retrieval without generation, through :class:`~opentier.engine.search.Search`."""

from __future__ import annotations

import grpc.aio

from opentier.engine.search import Search
from opentier.generated.intelligence.v1 import search_pb2, search_pb2_grpc
from opentier.host.servicers.convert import search_hit_pb, search_query, tenant_of


class SearchServicer(search_pb2_grpc.SearchServiceServicer):
    def __init__(self, search: Search) -> None:
        self._search = search

    async def Search(
        self, request: search_pb2.SearchRequest, context: grpc.aio.ServicerContext
    ) -> search_pb2.SearchResponse:
        query = search_query(request, tenant_of(request.caller))
        retriever = self._search.retriever(request.retriever or None)
        reranker = self._search.reranker(request.reranker or None)
        hits = await self._search.search(
            query, retriever=retriever.name, reranker=reranker.name if reranker else "none"
        )
        return search_pb2.SearchResponse(
            hits=[search_hit_pb(hit) for hit in hits],
            retriever=retriever.name,
            reranker=reranker.name if reranker else "",
        )
