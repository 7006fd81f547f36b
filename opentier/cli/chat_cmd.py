"""``opentier chat``: a conversation with your documents in the terminal, streamed from the host.

Interactive by default: each line you type is one turn; the answer streams as it is written and
its sources are listed under it. Ctrl-C during an answer cancels it (the partial answer is kept in
the conversation); Ctrl-C again, Ctrl-D or ``/quit`` exits. ``--message`` asks one question and
exits, for scripts (``--json`` prints the outcome as JSON).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
import threading
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import click
import grpc.aio
from google.protobuf import json_format
from rich.markup import escape

from opentier.cli import CliState, pass_state
from opentier.cli.client import HostClient, remote_error, tenant_option
from opentier.cli.host_cmd import run
from opentier.cli.views import err, out
from opentier.generated.intelligence.v1 import chat_pb2, conversations_pb2

QUIT = frozenset({"/quit", "/exit", "/q"})
NEW = "/new"
#: Exit status when an answer failed or was cancelled (``--message``).
EXIT_UNANSWERED = 1
EXIT_INTERRUPTED = 130


@dataclass
class Outcome:
    """One turn as the terminal saw it."""

    conversation_id: str = ""
    message_id: str = ""
    answer: str = ""
    citations: list[conversations_pb2.Citation] = field(default_factory=list)
    status: str = "unspecified"
    error: str = ""
    usage: conversations_pb2.Usage | None = None


@click.command("chat")
@click.option(
    "--collection",
    "-c",
    "collections",
    multiple=True,
    metavar="NAME",
    help="Collection to answer from (repeat for several); default: the conversation's.",
)
@click.option("--conversation", "conversation_id", metavar="ID", help="Continue this conversation.")
@click.option("--llm", help="LLM to answer with, when the host allows a choice (chat.allowed_llms).")
@click.option(
    "--retriever", "-r", help="Retriever: vector, fulltext, hybrid... (default: retrieval.retriever)."
)
@click.option("--top-k", "-k", type=click.IntRange(1), help="Sources to retrieve (default: retrieval.top_k).")
@click.option("--message", "-m", help="Ask this one question, print the answer and exit.")
@click.option("--json", "as_json", is_flag=True, help="With --message: print the outcome as JSON.")
@tenant_option
@pass_state
def command(  # noqa: PLR0917 (click passes every option positionally)
    state: CliState,
    collections: Sequence[str],
    conversation_id: str | None,
    llm: str | None,
    retriever: str | None,
    top_k: int | None,
    message: str | None,
    as_json: bool,
    tenant: str,
) -> None:
    """Chat with the documents of your collections, through the running host.

    Answers cite their sources as [n]; the sources are listed under each
    answer. Ctrl-C cancels an answer (the part written so far is kept);
    Ctrl-C again, Ctrl-D or /quit exits; /new starts a new conversation.
    """
    if as_json and message is None:
        raise click.UsageError("--json needs --message")
    session = Session(
        state,
        tenant=tenant,
        collections=collections,
        conversation_id=conversation_id,
        llm=llm,
        retriever=retriever,
        top_k=top_k,
    )
    if message is not None:
        outcome = run(session.once(message, echo=not as_json))
        if as_json:
            click.echo(json.dumps(outcome_json(outcome), indent=2, ensure_ascii=False))
        else:
            show_sources(outcome)
            err.print(f"conversation {outcome.conversation_id}", style="dim")
        if outcome.status != "complete":
            sys.exit(EXIT_UNANSWERED)
        return
    sys.exit(run(session.interactive()))


class Session:
    """One terminal conversation: the host client, the chosen collections and the current turn."""

    def __init__(
        self,
        state: CliState,
        *,
        tenant: str,
        collections: Sequence[str],
        conversation_id: str | None,
        llm: str | None,
        retriever: str | None,
        top_k: int | None,
    ) -> None:
        self.state = state
        self.tenant = tenant
        self.collection_names = list(collections)
        self.conversation_id = conversation_id or ""
        self.llm = llm or ""
        self.retriever = retriever or ""
        self.top_k = top_k or 0
        self.collection_ids: list[str] = []
        self._cancel: asyncio.Event | None = None

    async def once(self, message: str, *, echo: bool = True) -> Outcome:
        async with HostClient(self.state.settings, tenant=self.tenant) as client:
            await self._resolve(client)
            return await self.turn(client, message, echo=echo)

    async def interactive(self) -> int:
        loop = asyncio.get_running_loop()
        main = asyncio.current_task()
        assert main is not None
        interrupts = 0

        def on_interrupt() -> None:
            nonlocal interrupts
            interrupts += 1
            if self._cancel is not None and not self._cancel.is_set() and interrupts == 1:
                self._cancel.set()
                err.print("\n(cancelling the answer; Ctrl-C again quits)", style="dim")
            else:
                main.cancel()

        with contextlib.suppress(NotImplementedError):  # no signal handlers on Windows' loop
            loop.add_signal_handler(signal.SIGINT, on_interrupt)
        try:
            async with HostClient(self.state.settings, tenant=self.tenant) as client:
                await self._resolve(client)
                self._greet()
                while True:
                    interrupts = 0
                    line = await read_line("you> ")
                    if line is None or line.strip() in QUIT:
                        return 0
                    if line.strip() == NEW:
                        self.conversation_id = ""
                        err.print("(a new conversation starts with your next message)", style="dim")
                        continue
                    if not line.strip():
                        continue
                    out.print()
                    outcome = await self.turn(client, line)
                    show_sources(outcome)
                    out.print()
        except asyncio.CancelledError:
            err.print("\n(bye)", style="dim")
            return EXIT_INTERRUPTED
        finally:
            with contextlib.suppress(NotImplementedError):
                loop.remove_signal_handler(signal.SIGINT)

    async def turn(self, client: HostClient, message: str, *, echo: bool = True) -> Outcome:
        """Send ``message``, stream the answer to stdout, and return how the turn went."""
        cancel = self._cancel = asyncio.Event()
        start = chat_pb2.ChatStart(
            conversation_id=self.conversation_id,
            message=message,
            collection_ids=self.collection_ids,
            retriever=self.retriever,
            llm=self.llm,
            top_k=self.top_k,
        )

        async def requests() -> AsyncIterator[chat_pb2.ChatRequest]:
            yield chat_pb2.ChatRequest(caller=client.caller, start=start)
            await cancel.wait()
            yield chat_pb2.ChatRequest(caller=client.caller, cancel=chat_pb2.ChatCancel(reason="Ctrl-C"))

        outcome = Outcome()
        call = client.open_stream(client.chat.Chat, requests())
        try:
            async for event in call:
                self._apply(event, outcome, echo)
        except grpc.aio.AioRpcError as failure:
            raise remote_error(failure, client.target) from None
        finally:
            self._cancel = None
            call.cancel()
        if echo and outcome.answer and not outcome.answer.endswith("\n"):
            sys.stdout.write("\n")
            sys.stdout.flush()
        if outcome.error:
            err.print(f"error {escape(outcome.error)}", style="red")
        elif outcome.status == "cancelled":
            err.print("(answer cancelled; the part above is kept in the conversation)", style="dim")
        return outcome

    def _apply(self, event: chat_pb2.ChatEvent, outcome: Outcome, echo: bool) -> None:
        kind = event.WhichOneof("event")
        if kind == "started":
            self.conversation_id = outcome.conversation_id = event.started.conversation_id
            outcome.message_id = event.started.assistant_message_id
        elif kind == "token":
            outcome.answer += event.token.text
            if echo:
                sys.stdout.write(event.token.text)
                sys.stdout.flush()
        elif kind == "citation":
            outcome.citations.append(event.citation)
        elif kind == "usage":
            outcome.usage = event.usage
        elif kind == "error":
            outcome.error = f"[{event.error.code}]: {event.error.message}"
        elif kind == "done":
            outcome.status = (
                conversations_pb2.MessageStatus.Name(event.done.status)
                .removeprefix("MESSAGE_STATUS_")
                .lower()
            )

    async def _resolve(self, client: HostClient) -> None:
        self.collection_ids = [(await client.collection_named(name)).id for name in self.collection_names]

    def _greet(self) -> None:
        where = ", ".join(self.collection_names) or (
            "the conversation's collections" if self.conversation_id else "no collection (plain chat)"
        )
        err.print(
            f"Chatting over {escape(where)}"
            + (f" with {escape(self.llm)}" if self.llm else "")
            + ". Ctrl-C cancels an answer; /new starts a new conversation; /quit or Ctrl-D exits.",
            style="dim",
        )


async def read_line(prompt: str) -> str | None:
    """A line from the terminal, read in a daemon thread so that Ctrl-C can end the wait at once."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[str | None] = loop.create_future()

    def deliver(line: str | None) -> None:
        if not future.done():
            future.set_result(line)

    def read() -> None:
        try:
            line: str | None = input(prompt)
        except (EOFError, OSError):
            line = None
        loop.call_soon_threadsafe(deliver, line)

    threading.Thread(target=read, name="opentier-chat-input", daemon=True).start()
    return await future


def show_sources(outcome: Outcome) -> None:
    if not outcome.citations:
        return
    out.print("Sources:", style="bold")
    for citation in sorted(outcome.citations, key=lambda c: c.source_number):
        out.print(f"  {escape(source_line(citation))}")


def source_line(citation: conversations_pb2.Citation) -> str:
    where = citation.source + (f", page {citation.page}" if citation.HasField("page") else "")
    title = f"{citation.title} — " if citation.title and citation.title != citation.source else ""
    return f"[{citation.source_number}] {title}{where}"


def outcome_json(outcome: Outcome) -> dict[str, Any]:
    return {
        "conversation_id": outcome.conversation_id,
        "message_id": outcome.message_id,
        "status": outcome.status,
        "answer": outcome.answer,
        "error": outcome.error or None,
        "citations": [
            json_format.MessageToDict(c, preserving_proto_field_name=True) for c in outcome.citations
        ],
        "usage": json_format.MessageToDict(outcome.usage, preserving_proto_field_name=True)
        if outcome.usage is not None
        else None,
    }
