"""``/v1/conversations``: the caller's stored chats (list, read with messages, delete); scope ``chat``."""

from __future__ import annotations

from quart import Blueprint
from quart_schema import tag, validate_querystring, validate_response

from opentier.gateway import rpc
from opentier.gateway.errors import documented_errors
from opentier.gateway.principal import require
from opentier.gateway.routes.context import caller, host_client
from opentier.gateway.schemas.common import PageQuery, next_token
from opentier.gateway.schemas.conversations import (
    Conversation,
    ConversationDeleted,
    ConversationList,
    ConversationWithMessages,
)
from opentier.generated.intelligence.v1 import conversations_pb2

blueprint = Blueprint("conversations", __name__, url_prefix="/v1/conversations")
TAGS = ["Conversations"]


@blueprint.get("")
@require("chat")
@tag(TAGS)
@documented_errors(400, 401, 403, 500, 503)
@validate_querystring(PageQuery)
@validate_response(ConversationList)
async def list_conversations(query_args: PageQuery) -> ConversationList:
    """Your conversations, most recently updated first (scope `chat`)."""
    message = conversations_pb2.ListConversationsRequest(page=query_args.to_pb())
    response = await host_client().unary(rpc.LIST_CONVERSATIONS, message, caller())
    return ConversationList(
        conversations=[Conversation.from_pb(item) for item in response.conversations],
        next_page_token=next_token(response.page),
    )


@blueprint.get("/<conversation_id>")
@require("chat")
@tag(TAGS)
@documented_errors(400, 401, 403, 404, 500, 503)
@validate_response(ConversationWithMessages)
async def get_conversation(conversation_id: str) -> ConversationWithMessages:
    """A conversation with its messages, oldest first, each answer with its citations (scope `chat`)."""
    message = conversations_pb2.GetConversationRequest(conversation_id=conversation_id)
    return ConversationWithMessages.from_pb(
        await host_client().unary(rpc.GET_CONVERSATION, message, caller())
    )


@blueprint.delete("/<conversation_id>")
@require("chat")
@tag(TAGS)
@documented_errors(400, 401, 403, 404, 500, 503)
@validate_response(ConversationDeleted)
async def delete_conversation(conversation_id: str) -> ConversationDeleted:
    """Delete a conversation and its messages (scope `chat`)."""
    message = conversations_pb2.DeleteConversationRequest(conversation_id=conversation_id)
    response = await host_client().unary(rpc.DELETE_CONVERSATION, message, caller())
    return ConversationDeleted(messages_deleted=response.messages_deleted)
