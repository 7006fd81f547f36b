"""A follow-up question made standalone for retrieval ("and its drag?" → "wing drag and its drag?").

Retrieval sees one query, not the conversation, so a follow-up that leans on the previous question
finds little by itself. ``terms`` (the default, no model) prefixes the message with the key terms of
the previous user message: its words of three letters or more that are not common English words and
not already in the message, in order, at most ``chat.rewrite_terms``. ``llm`` asks the chat model for a
standalone query (one more call, so a slower first token); if that call fails, the ``terms`` query is
used and the failure logged. The first question of a conversation is never rewritten.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence

from opentier.components import LLM, ChatMessage, LLMRequest, TextDelta
from opentier.config import ChatSettings
from opentier.engine.chat.generation import close_stream
from opentier.errors import OpenTierError

log = logging.getLogger(__name__)

_WORD = re.compile(r"[^\W\d_][\w'-]*")
#: Words that carry no topic; the ``terms`` rewrite never adds them.
_STOPWORD_TEXT = """
    a about above after again against all also am an and any are as at be because been before being
    below between both but by can could did do does doing done down during each even ever few for from
    further get gets got had has have having he her here hers him his how however i if in into is it its
    itself just know like make many may me might more most much must my no nor not now of off on once
    one only or other our ours out over own please same say she should show so some such tell than that
    the their theirs them then there these they thing things this those through to too under until up
    us very was we well were what when where which while who whom whose why will with would yes yet you
    your yours explain describe give mean means really still
"""
STOPWORDS = frozenset(_STOPWORD_TEXT.split())
#: Longest standalone query taken from a model's rewrite.
MAX_REWRITE_CHARS = 500
#: History lines the ``llm`` rewrite sees.
REWRITE_HISTORY = 6


def key_terms(text: str, exclude: str, limit: int) -> list[str]:
    """Topic words of ``text`` (in order, each once) that ``exclude`` does not contain."""
    present = {word.lower() for word in _WORD.findall(exclude)}
    found: list[str] = []
    for word in _WORD.findall(text):
        lower = word.lower()
        if len(lower) < 3 or lower in STOPWORDS or lower in present:
            continue
        present.add(lower)
        found.append(word)
        if len(found) >= limit:
            break
    return found


def terms_query(message: str, history: Sequence[ChatMessage], limit: int) -> str:
    """``message`` prefixed by the key terms of the latest earlier user message."""
    previous = next((m.content for m in reversed(history) if m.role == "user"), None)
    if previous is None:
        return message
    terms = key_terms(previous, message, limit)
    return f"{' '.join(terms)} {message}" if terms else message


async def llm_query(llm: LLM, settings: ChatSettings, message: str, history: Sequence[ChatMessage]) -> str:
    """The model's standalone version of ``message``; the ``terms`` query when it fails or says nothing.

    The caller bounds the time it may take (the turn's deadline).
    """
    fallback = terms_query(message, history, settings.rewrite_terms)
    if not any(m.role == "user" for m in history):
        return message
    lines = [f"{m.role}: {' '.join(m.content.split())}" for m in history[-REWRITE_HISTORY:]]
    prompt = settings.rewrite_prompt.format(history="\n".join(lines), question=message)
    request = LLMRequest(messages=[ChatMessage("user", prompt)], max_output_tokens=64, temperature=0.0)
    parts: list[str] = []
    stream = llm.stream(request)
    try:
        async for event in stream:
            if isinstance(event, TextDelta):
                parts.append(event.text)
    except OpenTierError as err:
        log.warning(
            "rewriting a follow-up with %s failed ([%s] %s); using its key terms", llm.name, err.code, err
        )
        return fallback
    finally:
        await close_stream(stream)
    text = " ".join("".join(parts).split())[:MAX_REWRITE_CHARS].strip().strip('"')
    return text or fallback
