"""Chat: conversations, the RAG prompt, verified citations, and the orchestration of a turn.

``conversations`` stores conversations and messages; ``rewrite`` makes a follow-up standalone for
retrieval; ``prompt`` fits system prompt, history and numbered sources in the model's window;
``citations`` verifies citation markers as they stream; ``generation`` runs a model's stream with
time limits and cancellation; ``orchestrator`` ties them into one turn and ``events`` is what a turn
produces. ``docs/chat.md`` describes the whole flow.
"""

from __future__ import annotations

from opentier.engine.chat.conversations import ConversationInfo, Conversations, MessageInfo, Owner
from opentier.engine.chat.orchestrator import Chat, Turn, TurnRequest

__all__ = ["Chat", "ConversationInfo", "Conversations", "MessageInfo", "Owner", "Turn", "TurnRequest"]
