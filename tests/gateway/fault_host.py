"""A real host process with the test LLMs, for the fault tests that kill it with SIGKILL.

``python -m tests.gateway.fault_host <database url> <data dir> <port>`` serves on 127.0.0.1:<port> (0: any)
and prints ``serving on <target>`` once it answers; it runs until it is killed.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from opentier.config import ChatSettings, RetrievalSettings, Settings
from tests.gateway.streaming import HOST_CHAT_DEFAULTS, StreamingHost
from tests.host.conftest import host_settings


async def serve(database_url: str, data_dir: Path, port: int) -> None:
    root = data_dir / "root"
    root.mkdir(parents=True, exist_ok=True)
    database = Settings(database={"url": database_url})  # type: ignore[arg-type]
    settings = host_settings(database, data_dir / "host-state", root).model_copy(
        update={
            "retrieval": RetrievalSettings(retriever="vector"),
            # The text so far is written often, so the test need not stream long before the kill.
            "chat": ChatSettings(**{**HOST_CHAT_DEFAULTS, "checkpoint_seconds": 0.2}),
        }
    )
    settings = settings.model_copy(update={"host": settings.host.model_copy(update={"port": port})})
    host = StreamingHost(settings)
    host.llms.endless.interval = 0.05
    await host.start()
    print(f"serving on {host.target}", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(serve(sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])))
