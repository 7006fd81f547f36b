"""DocumentService: what ingestion stored, through :class:`~opentier.engine.documents.Documents`."""

from __future__ import annotations

import grpc.aio

from opentier.engine.documents import Documents
from opentier.generated.intelligence.v1 import common_pb2, documents_pb2, documents_pb2_grpc
from opentier.host.servicers.convert import document_pb, document_statuses, tenant_of


class DocumentServicer(documents_pb2_grpc.DocumentServiceServicer):
    def __init__(self, documents: Documents) -> None:
        self._documents = documents

    async def ListDocuments(
        self, request: documents_pb2.ListDocumentsRequest, context: grpc.aio.ServicerContext
    ) -> documents_pb2.ListDocumentsResponse:
        page = await self._documents.list(
            tenant_of(request.caller),
            collection_id=request.collection_id or None,
            statuses=document_statuses(request.statuses),
            page_size=request.page.page_size,
            page_token=request.page.page_token,
        )
        return documents_pb2.ListDocumentsResponse(
            documents=[document_pb(info) for info in page.items],
            page=common_pb2.PageResponse(next_page_token=page.next_token),
        )

    async def GetDocument(
        self, request: documents_pb2.GetDocumentRequest, context: grpc.aio.ServicerContext
    ) -> documents_pb2.Document:
        return document_pb(await self._documents.get(tenant_of(request.caller), request.document_id))

    async def DeleteDocument(
        self, request: documents_pb2.DeleteDocumentRequest, context: grpc.aio.ServicerContext
    ) -> documents_pb2.DeleteDocumentResponse:
        chunks = await self._documents.delete(tenant_of(request.caller), request.document_id)
        return documents_pb2.DeleteDocumentResponse(chunks_deleted=chunks)
