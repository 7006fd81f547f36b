"""The OpenAI-compatible API through the official ``openai`` SDK, against the real gateway under Hypercorn
and the real host: answers with citations and usage, streaming, history, models, and OpenAI's errors."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import openai
import pytest
from openai import AsyncOpenAI
from openai.types.chat import ChatCompletionMessageParam

from opentier.components import Usage
from tests.gateway.streaming import (  # noqa: F401 - fixtures
    NO_SOURCE_ANSWER,
    ChatGateway,
    ChatUser,
    chat_gateway_fixture,
    chat_settings_fixture,
    host_chat_options_fixture,
    ingest_text,
    limits_options_fixture,
    signed_in_key,
    streaming_host_fixture,
    streaming_options_fixture,
)

WINGS = (
    "Wings make lift because air flows faster over the curved upper surface.\n\n"
    "Flaps and slats raise lift at low speed, for take-off and landing."
)
QUESTION = "How do wings make lift?"


def sdk(gateway: ChatGateway, key: str) -> AsyncOpenAI:
    return AsyncOpenAI(base_url=f"{gateway.url}/v1", api_key=key, max_retries=0, timeout=30)


async def collection_name(gateway: ChatGateway, user: ChatUser, collection_id: str) -> str:
    found = await gateway.api.get(f"/v1/collections/{collection_id}", headers=user.key_headers)
    assert found.status_code == 200, found.text
    name: str = found.json()["name"]
    return name


async def stored_messages(gateway: ChatGateway, user: ChatUser, conversation_id: str) -> list[dict[str, Any]]:
    found = await gateway.api.get(f"/v1/conversations/{conversation_id}", headers=user.key_headers)
    assert found.status_code == 200, found.text
    messages: list[dict[str, Any]] = found.json()["messages"]
    return messages


async def test_an_answer_from_the_collection_with_citations_and_usage(chat_gateway: ChatGateway) -> None:
    user = await signed_in_key(chat_gateway)
    docs = await ingest_text(chat_gateway, user, WINGS, filename="wings.txt")
    model = await collection_name(chat_gateway, user, docs.collection_id)
    client = sdk(chat_gateway, user.key)

    completion = await client.chat.completions.create(
        model=model,
        messages=[
            {"role": "system", "content": "Talk like a pirate."},
            {"role": "user", "content": QUESTION},
        ],
    )

    assert completion.object == "chat.completion" and completion.model == model
    [choice] = completion.choices
    text = choice.message.content
    assert text is not None and text.startswith("Wings make lift") and text.endswith("[1]")
    assert choice.finish_reason == "stop" and choice.message.role == "assistant"
    citations = (choice.message.model_extra or {})["citations"]
    assert [(c["source_number"], c["document_id"], c["source"]) for c in citations] == [
        (1, docs.document_id, "wings.txt")
    ]
    assert citations[0]["text"].startswith("Wings make lift")
    usage = completion.usage
    assert usage is not None and usage.prompt_tokens > 0
    assert usage.completion_tokens == len(text.split(" "))
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    # stored as a new conversation; the client's system message never reached the model
    conversation_id = (completion.model_extra or {})["conversation_id"]
    messages = await stored_messages(chat_gateway, user, conversation_id)
    assert [(m["role"], m["content"]) for m in messages] == [("user", QUESTION), ("assistant", text)]
    assert completion.id == f"chatcmpl-{messages[1]['id']}"
    request = chat_gateway.llms.citing.requests[-1]
    assert all("pirate" not in m.content for m in request.messages)
    assert "pirate" not in (request.system or "")


async def test_streamed_deltas_add_up_to_the_stored_answer(chat_gateway: ChatGateway) -> None:
    user = await signed_in_key(chat_gateway)
    docs = await ingest_text(chat_gateway, user, WINGS, filename="wings.txt")
    client = sdk(chat_gateway, user.key)

    stream = await client.chat.completions.create(
        model=docs.collection_id,  # a collection's id names it as well as its name
        messages=[{"role": "user", "content": QUESTION}],
        stream=True,
        stream_options={"include_usage": True},
    )
    conversation_id = stream.response.headers["OpenTier-Conversation-Id"]
    chunks = [chunk async for chunk in stream]

    assert all(chunk.object == "chat.completion.chunk" for chunk in chunks)
    assert len({chunk.id for chunk in chunks}) == 1
    deltas = [c.choices[0].delta for c in chunks if c.choices]
    assert deltas[0].role == "assistant"
    pieces = [d.content for d in deltas if d.content]
    assert len(pieces) > 3  # word by word, not one block
    citations = [cited for d in deltas for cited in (d.model_extra or {}).get("citations") or []]
    assert [c["document_id"] for c in citations] == [docs.document_id]
    finishing = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishing == ["stop"]
    last = chunks[-1]
    assert last.choices == [] and last.usage is not None and last.usage.completion_tokens > 0

    messages = await stored_messages(chat_gateway, user, conversation_id)
    assert messages[-1]["status"] == "complete" and messages[-1]["content"] == "".join(pieces)


async def test_earlier_messages_are_the_history_and_metadata_continues_a_conversation(
    chat_gateway: ChatGateway,
) -> None:
    user = await signed_in_key(chat_gateway)
    client = sdk(chat_gateway, user.key)
    first = await client.chat.completions.create(
        model="opentier", messages=[{"role": "user", "content": "Hello?"}]
    )
    assert first.choices[0].message.content == NO_SOURCE_ANSWER
    conversation_id = (first.model_extra or {})["conversation_id"]

    await client.chat.completions.create(
        model="opentier",
        messages=[
            {"role": "user", "content": "My name is Ada."},
            {"role": "assistant", "content": "Hello Ada."},
            {"role": "user", "content": [{"type": "text", "text": "What is my name?"}]},
        ],
        metadata={"conversation_id": conversation_id},
    )
    request = chat_gateway.llms.citing.requests[-1]
    # the client's messages, not the stored ones, are the history
    assert [(m.role, m.content) for m in request.messages[:2]] == [
        ("user", "My name is Ada."),
        ("assistant", "Hello Ada."),
    ]
    assert request.messages[-1].content.endswith("What is my name?")
    messages = await stored_messages(chat_gateway, user, conversation_id)
    assert [m["content"] for m in messages[::2]] == ["Hello?", "What is my name?"]


@pytest.mark.parametrize("host_chat_options", [{"llm": "scripted"}], indirect=True)
async def test_max_tokens_and_temperature_reach_the_model_and_a_cut_answer_ends_with_length(
    chat_gateway: ChatGateway,
) -> None:
    user = await signed_in_key(chat_gateway)
    scripted = chat_gateway.llms.scripted
    scripted.script = [f"word{index} " for index in range(16)]
    scripted.usage = Usage(input_tokens=9, output_tokens=16)
    client = sdk(chat_gateway, user.key)

    completion = await client.chat.completions.create(
        model="opentier", messages=[{"role": "user", "content": "Talk."}], max_tokens=16, temperature=0.7
    )
    assert (scripted.requests[-1].max_output_tokens, scripted.requests[-1].temperature) == (16, 0.7)
    assert completion.choices[0].finish_reason == "length"
    assert completion.usage is not None and completion.usage.completion_tokens == 16

    await client.chat.completions.create(
        model="opentier", messages=[{"role": "user", "content": "Talk."}], max_completion_tokens=20
    )
    assert scripted.requests[-1].max_output_tokens == 20


async def test_models_are_the_callers_collections_and_opentier(chat_gateway: ChatGateway) -> None:
    user = await signed_in_key(chat_gateway)
    docs = await ingest_text(chat_gateway, user, WINGS)
    name = await collection_name(chat_gateway, user, docs.collection_id)
    other = await signed_in_key(chat_gateway)
    await ingest_text(chat_gateway, other, "Boats float.")

    models = [model async for model in sdk(chat_gateway, user.key).models.list()]
    assert sorted(model.id for model in models) == sorted([name, "opentier"])
    assert all(model.object == "model" and model.owned_by == "opentier" for model in models)
    found = await sdk(chat_gateway, user.key).models.retrieve(docs.collection_id)
    assert found.id == name


async def test_errors_come_in_openais_shape_as_the_sdks_exceptions(chat_gateway: ChatGateway) -> None:
    user = await signed_in_key(chat_gateway)
    other = await signed_in_key(chat_gateway)
    theirs = await ingest_text(chat_gateway, other, "Boats float.")
    client = sdk(chat_gateway, user.key)
    hello: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Hi"}]

    # an unknown model, and another tenant's collection, are not found
    for model in ("no-such-collection", theirs.collection_id):
        with pytest.raises(openai.NotFoundError) as caught:
            await client.chat.completions.create(model=model, messages=hello)
        assert caught.value.code == "model_not_found" and caught.value.type == "not_found_error"
        assert model in caught.value.message
    with pytest.raises(openai.BadRequestError) as invalid:
        await client.chat.completions.create(
            model="opentier", messages=[{"role": "assistant", "content": "I speak first."}]
        )
    assert invalid.value.type == "invalid_request_error" and invalid.value.code == "invalid_request"

    # a bad key, and a key without the chat scope
    stranger = sdk(chat_gateway, "otk_not-a-real-key")
    with pytest.raises(openai.AuthenticationError) as unknown:
        await stranger.chat.completions.create(model="opentier", messages=hello)
    assert unknown.value.code == "unauthenticated" and unknown.value.type == "authentication_error"
    with pytest.raises(openai.AuthenticationError):
        await stranger.models.list()
    reader = await signed_in_key(chat_gateway, scopes=("read",))
    with pytest.raises(openai.PermissionDeniedError):
        await sdk(chat_gateway, reader.key).chat.completions.create(
            model="opentier",
            messages=hello,
        )


@pytest.mark.parametrize("host_chat_options", [{"llm": "scripted"}], indirect=True)
@pytest.mark.parametrize("streaming_options", [{"heartbeat_seconds": 0.1}], indirect=True)
async def test_a_quiet_stream_gets_keepalives_and_a_client_that_leaves_stops_the_answer(
    chat_gateway: ChatGateway,
) -> None:
    user = await signed_in_key(chat_gateway)
    scripted = chat_gateway.llms.scripted
    scripted.script = ["Let me think", 0.4, " about it.", 30.0, " Never sent."]
    body = {"model": "opentier", "messages": [{"role": "user", "content": "Think."}], "stream": True}
    client = chat_gateway.api.client
    lines: list[str] = []
    async with client.stream("POST", "/v1/chat/completions", json=body, headers=user.key_headers) as response:
        assert response.status_code == 200 and response.headers["content-type"].startswith(
            "text/event-stream"
        )
        conversation_id = response.headers["OpenTier-Conversation-Id"]
        async for line in response.aiter_lines():
            lines.append(line)
            if "about it." in line:
                break  # the client goes away in the middle of the answer

    assert ": keepalive" in lines
    contents = [
        json.loads(line.removeprefix("data: "))["choices"][0]["delta"].get("content")
        for line in lines
        if line.startswith("data: ")
    ]
    assert "".join(c for c in contents if c) == "Let me think about it."
    assert (await scripted.wait_ended())[-1] in {"CancelledError", "GeneratorExit"}
    async with asyncio.timeout(10):
        while (message := (await stored_messages(chat_gateway, user, conversation_id))[-1])[
            "status"
        ] != "cancelled":
            await asyncio.sleep(0.05)
    assert message["content"] == "Let me think about it."
