"""``opentier conversations``: list, show and delete the stored chats on the running host."""

from __future__ import annotations

import click
from rich.markup import escape
from rich.table import Table

from opentier.cli import CliState, pass_state
from opentier.cli.chat_cmd import source_line
from opentier.cli.client import PAGE_SIZE, HostClient, tenant_option
from opentier.cli.host_cmd import run
from opentier.cli.views import out, shown_time
from opentier.generated.intelligence.v1 import common_pb2, conversations_pb2


@click.group("conversations", invoke_without_command=True)
@tenant_option
@click.pass_context
def command(ctx: click.Context, tenant: str) -> None:
    """Conversations: the stored chats, with every answer's sources.

    Without a subcommand, lists them, most recent first. Talks to the running
    host (`opentier up`), as user `cli` of the tenant.
    """
    if ctx.invoked_subcommand is None:
        ctx.invoke(list_command, tenant=tenant)


@command.command("list")
@tenant_option
@pass_state
def list_command(state: CliState, tenant: str) -> None:
    """List the conversations, most recently updated first."""

    async def main() -> list[conversations_pb2.Conversation]:
        found: list[conversations_pb2.Conversation] = []
        async with HostClient(state.settings, tenant=tenant) as client:
            token = ""
            while True:
                page = await client.call(
                    client.conversations.ListConversations,
                    conversations_pb2.ListConversationsRequest(
                        caller=client.caller,
                        page=common_pb2.PageRequest(page_size=PAGE_SIZE, page_token=token),
                    ),
                )
                found.extend(page.conversations)
                token = page.page.next_page_token
                if not token:
                    return found

    conversations = run(main())
    if not conversations:
        out.print("no conversations yet; start one with `opentier chat --collection NAME`")
        return
    table = Table()
    table.add_column("id", overflow="fold")
    table.add_column("title", overflow="fold")
    table.add_column("messages", justify="right")
    table.add_column("updated")
    for conversation in conversations:
        table.add_row(
            conversation.id,
            escape(conversation.title or "-"),
            str(conversation.message_count),
            shown_time(conversation.updated_at),
        )
    out.print(table)


@command.command("show")
@click.argument("conversation_id", metavar="ID")
@tenant_option
@pass_state
def show_command(state: CliState, conversation_id: str, tenant: str) -> None:
    """Show a conversation's messages with the sources each answer cites."""

    async def main() -> conversations_pb2.GetConversationResponse:
        async with HostClient(state.settings, tenant=tenant) as client:
            request = conversations_pb2.GetConversationRequest(
                caller=client.caller, conversation_id=conversation_id
            )
            response: conversations_pb2.GetConversationResponse = await client.call(
                client.conversations.GetConversation, request
            )
            return response

    found = run(main())
    out.print(f"[bold]{escape(found.conversation.title or '(untitled)')}[/bold]  {found.conversation.id}")
    for message in found.messages:
        role = conversations_pb2.MessageRole.Name(message.role).removeprefix("MESSAGE_ROLE_").lower()
        status = conversations_pb2.MessageStatus.Name(message.status).removeprefix("MESSAGE_STATUS_").lower()
        note = "" if status == "complete" else f" ({status})"
        out.print(f"\n[bold]{role}[/bold]{note}  [dim]{shown_time(message.created_at)}[/dim]")
        out.print(escape(message.content) or "[dim](no text)[/dim]")
        if message.HasField("error") and message.error.code:
            out.print(f"[red]error [{escape(message.error.code)}]: {escape(message.error.message)}[/red]")
        for citation in message.citations:
            out.print(f"  [dim]{escape(source_line(citation))}[/dim]")


@command.command("delete")
@click.argument("conversation_id", metavar="ID")
@tenant_option
@pass_state
def delete_command(state: CliState, conversation_id: str, tenant: str) -> None:
    """Delete a conversation and its messages."""

    async def main() -> conversations_pb2.DeleteConversationResponse:
        async with HostClient(state.settings, tenant=tenant) as client:
            request = conversations_pb2.DeleteConversationRequest(
                caller=client.caller, conversation_id=conversation_id
            )
            response: conversations_pb2.DeleteConversationResponse = await client.call(
                client.conversations.DeleteConversation, request
            )
            return response

    deleted = run(main())
    out.print(f"deleted conversation {conversation_id} ({deleted.messages_deleted} messages)")
