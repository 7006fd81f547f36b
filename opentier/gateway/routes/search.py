"""``POST /v1/search``: retrieval without generation, over the caller's collections."""

from __future__ import annotations

from quart import Blueprint
from quart_schema import tag, validate_request, validate_response

from opentier.gateway import rpc
from opentier.gateway.errors import documented_errors
from opentier.gateway.principal import require
from opentier.gateway.routes.context import caller, host_client
from opentier.gateway.schemas.common import struct_of
from opentier.gateway.schemas.search import SearchQuery, SearchResults
from opentier.generated.intelligence.v1 import search_pb2

blueprint = Blueprint("search", __name__, url_prefix="/v1")


@blueprint.post("/search")
@require("read")
@tag(["Search"])
@documented_errors(400, 401, 403, 404, 413, 500, 503)
@validate_request(SearchQuery)
@validate_response(SearchResults)
async def search(data: SearchQuery) -> SearchResults:
    """Find the chunks that best match a query (scope `read`).

    Each hit carries what a citation needs: document, source, title, headings, page and character span.
    An unknown retriever or reranker is 400 `component_unknown`, naming the installed ones.
    """
    message = search_pb2.SearchRequest(
        query=data.query,
        collection_ids=data.collection_ids,
        retriever=data.retriever or "",
        top_k=data.top_k or 0,
        filters=struct_of(data.filters),
        options=struct_of(data.options),
        reranker=data.reranker or "",
    )
    return SearchResults.from_pb(await host_client().unary(rpc.SEARCH, message, caller()))
