"""``opentier remote``: use a running gateway from the terminal, through :mod:`opentier.client`.

Unlike the local commands (``opentier ingest``, ``opentier chat``), which call the host on this machine
over gRPC, these go through a gateway's public API, anywhere: ``remote login`` once (it saves the URL
and a fresh API key in ``~/.config/opentier/remote.toml``, mode 0600), then ``remote ingest``,
``remote search``, ``remote chat``. ``--url`` and ``--api-key`` (or ``OPENTIER_URL`` and
``OPENTIER_API_KEY``) override the file.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from opentier.client import (
    Answer,
    AuthenticationError,
    ChatSession,
    ChatStream,
    Client,
    ClientError,
    Collection,
    Job,
    NotFoundError,
    TokenEvent,
)
from opentier.client import profile as profiles
from opentier.client.common import DEFAULT_TIMEOUT
from opentier.client.models import Citation

F = TypeVar("F", bound=Callable[..., Any])

#: Tables and answers go to stdout; progress, hints and errors to stderr.
out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False)

PASSWORD_ENV = "OPENTIER_PASSWORD"
#: Scopes of the key ``remote login`` creates when ``--scope`` is not given (and the sign-in holds them).
LOGIN_SCOPES = ("read", "ingest", "chat")
QUIT = frozenset({"/quit", "/exit", "/q"})
NEW = "/new"
EXIT_FAILED = 1
EXIT_ERROR = 2
EXIT_INTERRUPTED = 130
TEXT_COLUMN_CHARS = 160


class RemoteGroup(click.Group):
    """Prints a client error as one line (code, HTTP status, request id) and exits 2."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ClientError as error:
            fail(error)
        except profiles.ProfileError as error:
            click.echo(f"error: {error}", err=True)
            sys.exit(EXIT_ERROR)


def fail(error: ClientError) -> NoReturn:
    status = f" (HTTP {error.status})" if error.status else ""
    click.echo(f"error [{error.code}]{status}: {error.message}", err=True)
    if error.retry_after is not None:
        click.echo(f"  try again in {error.retry_after:g} s", err=True)
    if error.request_id:
        click.echo(f"  request id {error.request_id}", err=True)
    sys.exit(EXIT_ERROR)


@click.group("remote", cls=RemoteGroup)
@click.option(
    "--remote-config",
    type=click.Path(path_type=Path, dir_okay=False),
    envvar=profiles.PATH_ENV,
    help=f"The file `remote login` writes (default ~/.config/opentier/remote.toml; ${profiles.PATH_ENV}).",
)
@click.pass_context
def command(ctx: click.Context, remote_config: Path | None) -> None:
    """Use a running OpenTier gateway, here or anywhere, through its public API.

    \b
      opentier remote login --url https://opentier.example.org
      opentier remote ingest ./manuals --collection manuals
      opentier remote search "trailing edge flaps" --collection manuals
      opentier remote chat "How do flaps work?" --collection manuals

    The gateway URL and API key come from --url/--api-key, then OPENTIER_URL and
    OPENTIER_API_KEY, then the file `remote login` wrote.
    """
    ctx.meta["opentier.remote_config"] = remote_config


def config_path(ctx: click.Context) -> Path:
    chosen: Path | None = ctx.meta.get("opentier.remote_config")
    return chosen or profiles.default_path()


def connection_options(command: F) -> F:
    """``--url``, ``--api-key`` and ``--timeout`` of the commands that call the gateway."""
    for option in reversed(
        (
            click.option(
                "--url", metavar="URL", help=f"Gateway URL (default: ${profiles.URL_ENV}, then login's)."
            ),
            click.option(
                "--api-key",
                metavar="KEY",
                help=f"API key (default: ${profiles.API_KEY_ENV}, then login's; prefer those: other users "
                "can see command lines).",
            ),
            click.option(
                "--timeout",
                type=click.FloatRange(min=0.1),
                default=DEFAULT_TIMEOUT,
                show_default=True,
                help="Seconds a call may take.",
            ),
        )
    ):
        command = option(command)
    return command


def connect(
    ctx: click.Context, url: str | None, api_key: str | None, timeout: float, *, sse: bool = False
) -> Client:
    path = config_path(ctx)
    connection = profiles.resolve(url, api_key, path=path)
    if "file" in (connection.url_from, connection.api_key_from) and profiles.too_open(path):
        err.print(f"warning: {path} is readable by others; run `chmod 600 {path}`", style="yellow")
    return Client(
        connection.url,
        api_key=connection.api_key,
        timeout=timeout,
        chat_transport="sse" if sse else "websocket",
    )


# -- login, logout ----------------------------------------------------------------------------------


@command.command("login")
@click.option("--url", metavar="URL", help=f"Gateway URL (asked when missing; ${profiles.URL_ENV}).")
@click.option("--email", help="Your email (asked when missing).")
@click.option("--tenant", help="Your tenant's name (default: the gateway's default tenant).")
@click.option(
    "--password-stdin",
    is_flag=True,
    help=f"Read the password from standard input (else ${PASSWORD_ENV}, else asked).",
)
@click.option(
    "--api-key",
    "given_key",
    metavar="KEY",
    help="Save this API key instead of signing in with a password (it is checked first).",
)
@click.option(
    "--scope",
    "scopes",
    multiple=True,
    type=click.Choice(["read", "ingest", "chat", "admin"]),
    help="Scope of the API key login creates (repeat; default: read, ingest, chat).",
)
@click.option("--expires-in-days", type=click.IntRange(min=1), help="Lifetime of the created key.")
@click.pass_context
def login(  # noqa: PLR0917 (click passes every option positionally)
    ctx: click.Context,
    url: str | None,
    email: str | None,
    tenant: str | None,
    password_stdin: bool,
    given_key: str | None,
    scopes: Sequence[str],
    expires_in_days: int | None,
) -> None:
    """Sign in to a gateway and save its URL and an API key for the other commands.

    With a password, login signs in, creates an API key for this machine
    (named after it, scopes read, ingest and chat), ends the password
    session and saves the key: keys do not expire in minutes and can be
    revoked one by one (`remote logout` revokes it). With --api-key it saves
    that key instead. The file is readable by you only (mode 0600); the key
    is never printed.
    """
    path = config_path(ctx)
    stored = profiles.load(path)
    url = url or os.environ.get(profiles.URL_ENV) or stored.url or click.prompt("Gateway URL")
    if given_key:
        with Client(url, api_key=given_key) as client:
            me = client.me()
        saved = profiles.Profile(
            url=client.base_url, api_key=given_key, email=me.user.email, tenant=me.tenant.name
        )
        where = profiles.save(saved, path)
        out.print(f"API key of {escape(me.user.email)} (tenant {escape(me.tenant.name)}) saved in {where}")
        return
    email = email or click.prompt("Email")
    password = _password(password_stdin)
    with Client(url) as client:
        client.login(email, password, tenant=tenant)
        me = client.me()
        wanted = list(scopes) or [scope for scope in LOGIN_SCOPES if scope in me.scopes]
        key = client.create_api_key(
            f"opentier remote on {socket.gethostname()}", wanted, expires_in_days=expires_in_days
        )
        client.logout()
    saved = profiles.Profile(
        url=client.base_url, api_key=key.key, api_key_id=key.id, email=me.user.email, tenant=me.tenant.name
    )
    where = profiles.save(saved, path)
    who = f"{escape(me.user.email)} (tenant {escape(me.tenant.name)})"
    out.print(
        f"Signed in to {escape(client.base_url)} as {who}.\n"
        f"API key {escape(key.prefix)}… (scopes {', '.join(key.scopes)}) saved in {where} (mode 600)."
    )


def _password(from_stdin: bool) -> str:
    if from_stdin:
        line = sys.stdin.readline().rstrip("\r\n")
        if not line:
            raise click.UsageError("--password-stdin: standard input held no password")
        return line
    from_env = os.environ.get(PASSWORD_ENV)
    if from_env:
        return from_env
    password: str = click.prompt("Password", hide_input=True)
    return password


@command.command("logout")
@click.option("--keep-key", is_flag=True, help="Do not revoke the API key login created; only forget it.")
@click.pass_context
def logout(ctx: click.Context, keep_key: bool) -> None:
    """Forget the saved gateway and key, revoking the key that `remote login` created."""
    path = config_path(ctx)
    stored = profiles.load(path)
    if stored.url and stored.api_key and stored.api_key_id and not keep_key:
        try:
            with Client(stored.url, api_key=stored.api_key) as client:
                client.revoke_api_key(stored.api_key_id)
            err.print("API key revoked.")
        except AuthenticationError:
            err.print("The API key no longer worked (already revoked or expired).")
        except ClientError as error:
            err.print(
                f"warning: could not revoke the API key ({error}); revoke it from another session "
                f"(DELETE /v1/keys/{stored.api_key_id})",
                style="yellow",
            )
    if profiles.delete(path):
        out.print(f"Forgot {stored.url or 'the gateway'} ({path} removed).")
    else:
        out.print(f"Not signed in ({path} does not exist).")


@command.command("whoami")
@connection_options
@click.pass_context
def whoami(ctx: click.Context, url: str | None, api_key: str | None, timeout: float) -> None:
    """Show the gateway, your user, tenant and the key's scopes."""
    with connect(ctx, url, api_key, timeout) as client:
        me = client.me()
    out.print(
        f"{client.base_url}: {escape(me.user.email)} ({me.user.role}) of tenant {escape(me.tenant.name)}"
    )
    out.print(f"scopes: {', '.join(me.scopes)}")


# -- collections ------------------------------------------------------------------------------------


@command.group("collections", invoke_without_command=True)
@click.pass_context
def collections(ctx: click.Context) -> None:
    """List (the default), create or delete collections."""
    if ctx.invoked_subcommand is None:
        ctx.invoke(list_collections)


@collections.command("list")
@connection_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.pass_context
def list_collections(
    ctx: click.Context,
    url: str | None = None,
    api_key: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    as_json: bool = False,
) -> None:
    """List your tenant's collections with their document and chunk counts."""
    with connect(ctx, url, api_key, timeout) as client:
        found = list(client.iter_collections(page_size=500))
    if as_json:
        click.echo(json.dumps([item.model_dump(mode="json") for item in found], indent=2))
        return
    table = Table("name", "id", "documents", "chunks", "embedder")
    for item in found:
        table.add_row(
            escape(item.name), item.id, str(item.document_count), str(item.chunk_count), item.embedder
        )
    out.print(table if found else "No collections yet: `opentier remote collections create NAME`.")


@collections.command("create")
@click.argument("name")
@click.option("--description", help="What the collection holds.")
@connection_options
@click.pass_context
def create_collection(  # noqa: PLR0917
    ctx: click.Context,
    name: str,
    description: str | None,
    url: str | None,
    api_key: str | None,
    timeout: float,
) -> None:
    """Create a collection named NAME."""
    with connect(ctx, url, api_key, timeout) as client:
        created = client.create_collection(name, description=description)
    out.print(f"Created collection {escape(created.name)} ({created.id}).")


@collections.command("delete")
@click.argument("collection")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@connection_options
@click.pass_context
def delete_collection(  # noqa: PLR0917
    ctx: click.Context, collection: str, yes: bool, url: str | None, api_key: str | None, timeout: float
) -> None:
    """Delete COLLECTION (a name or an id) with all its documents."""
    with connect(ctx, url, api_key, timeout) as client:
        found = resolve_collection(client, collection)
        if not yes:
            click.confirm(
                f"Delete {found.name} with its {found.document_count} documents?", abort=True, err=True
            )
        deleted = client.delete_collection(found.id)
    counts = f"{deleted.documents_deleted} documents, {deleted.chunks_deleted} chunks"
    out.print(f"Deleted {escape(found.name)}: {counts}.")


def resolve_collection(client: Client, reference: str, *, create: bool = False) -> Collection:
    """The collection with this id or name; created (by name) when ``create`` and missing."""
    if _is_uuid(reference):
        try:
            return client.get_collection(reference)
        except NotFoundError:
            pass
    found = client.find_collection(reference)
    if found is not None:
        return found
    if create:
        created = client.create_collection(reference)
        err.print(f"Created collection {escape(created.name)}.")
        return created
    raise NotFoundError(
        f"no collection named {reference!r}; see `opentier remote collections`", code="not_found", status=404
    )


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


# -- ingest -----------------------------------------------------------------------------------------


@dataclass
class Upload:
    """One file of an ingest run and what became of it."""

    path: Path
    source: str
    size: int
    job: Job | None = None
    #: Why it did not become a searchable document (the upload, the job or the document failed).
    error: str = ""
    task: TaskID | None = None

    @property
    def succeeded(self) -> bool:
        job = self.job
        return not self.error and job is not None and job.succeeded and not job.counts.failed

    @property
    def status(self) -> str:
        if self.job is None:
            return "upload failed" if self.error else "-"
        if self.job.succeeded and self.job.counts.failed:
            return "failed"
        if self.job.succeeded and self.job.counts.unchanged and not self.job.counts.chunks_written:
            return "unchanged"
        return self.job.status or "-"


@dataclass
class IngestRun:
    uploads: list[Upload] = field(default_factory=list)

    @property
    def failed(self) -> list[Upload]:
        return [upload for upload in self.uploads if not upload.succeeded]


def files_of(paths: Sequence[Path]) -> Iterator[tuple[Path, str]]:
    """Each file with its source name: a file's own name, or its path from the folder given (the
    folder's name first), skipping hidden files and folders."""
    for given in paths:
        if given.is_file():
            yield given, given.name
            continue
        for root, folders, names in os.walk(given):
            folders[:] = sorted(name for name in folders if not name.startswith("."))
            for name in sorted(names):
                if name.startswith("."):
                    continue
                path = Path(root) / name
                yield path, (Path(given.resolve().name) / path.relative_to(given)).as_posix()


@command.command("ingest")
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--collection", "-c", required=True, metavar="NAME", help="Collection (name or id) to add to.")
@click.option(
    "--create/--no-create", default=True, show_default=True, help="Create the collection if missing."
)
@click.option(
    "--metadata", metavar="JSON", help='A JSON object stored with each document, e.g. \'{"team": "aero"}\'.'
)
@click.option("--force", is_flag=True, help="Process again even when the content is unchanged.")
@click.option(
    "--wait/--no-wait", default=True, show_default=True, help="Wait until the documents are searchable."
)
@click.option("--wait-timeout", type=click.FloatRange(min=1), help="Give up waiting after this many seconds.")
@connection_options
@click.pass_context
def ingest(  # noqa: PLR0917
    ctx: click.Context,
    paths: Sequence[Path],
    collection: str,
    create: bool,
    metadata: str | None,
    force: bool,
    wait: bool,
    wait_timeout: float | None,
    url: str | None,
    api_key: str | None,
    timeout: float,
) -> None:
    """Upload files and folders (recursively, hidden files skipped) into a collection.

    Each file's upload shows a progress bar; then the command waits for the
    ingestion jobs and prints a table of what happened to each file. The
    source of a file in a folder is its path from that folder (`manuals/a.pdf`):
    uploading it again replaces the document when it changed. Exits 1 when
    a file failed.
    """
    extra = _json_object(metadata, "--metadata") if metadata else None
    run = IngestRun([Upload(path, source, path.stat().st_size) for path, source in files_of(paths)])
    if not run.uploads:
        raise click.UsageError("no files to ingest (hidden files are skipped)")
    with connect(ctx, url, api_key, timeout) as client:
        target = resolve_collection(client, collection, create=create)
        with _progress() as progress:
            for upload in run.uploads:
                _upload(client, progress, target, upload, metadata=extra, force=force)
            if wait:
                for upload in run.uploads:
                    _wait(client, progress, upload, wait_timeout)
        if wait:
            _explain_failures(client, target, run)
    _show_ingest(run, target, waited=wait)
    if run.failed and (wait or any(upload.error for upload in run.uploads)):
        sys.exit(EXIT_FAILED)


def _json_object(text: str, option: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise click.BadParameter(f"not JSON: {error.msg}", param_hint=option) from None
    if not isinstance(value, dict):
        raise click.BadParameter("must be a JSON object", param_hint=option)
    return value


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=False,
    )


def _upload(
    client: Client,
    progress: Progress,
    target: Collection,
    upload: Upload,
    *,
    metadata: dict[str, Any] | None,
    force: bool,
) -> None:
    task = upload.task = progress.add_task(f"↑ {escape(upload.source)}", total=upload.size or 1)

    def sent(done: int, total: int) -> None:
        progress.update(task, completed=done, total=total or 1)

    try:
        upload.job = client.upload(
            target.id, upload.path, filename=upload.source, metadata=metadata, force=force, on_progress=sent
        )
    except (ClientError, OSError) as error:
        upload.error = str(error)
        progress.update(task, description=f"✗ {escape(upload.source)}")
        return
    progress.update(task, completed=upload.size, total=upload.size or 1)


def _wait(client: Client, progress: Progress, upload: Upload, timeout: float | None) -> None:
    if upload.job is None or upload.task is None:
        return
    task = upload.task
    progress.update(task, description=f"⋯ {escape(upload.source)}")

    def seen(job: Job) -> None:
        done = f" {job.progress:.0%}" if job.progress is not None else ""
        progress.update(task, description=f"⋯ {escape(upload.source)}{done}")

    try:
        upload.job = client.wait_for_job(upload.job, on_progress=seen, timeout=timeout)
    except ClientError as error:
        upload.error = str(error)
    mark = "✓" if upload.succeeded else "✗"
    progress.update(task, description=f"{mark} {escape(upload.source)}")


def _explain_failures(client: Client, target: Collection, run: IngestRun) -> None:
    """Say why each document whose job counted a failure failed (its stage, code and message)."""
    unexplained = {u.source: u for u in run.uploads if not u.error and u.job and u.job.counts.failed}
    if not unexplained:
        return
    for document in client.iter_documents(target.id, status=["failed"]):
        upload = unexplained.get(document.source)
        if upload is not None and document.error is not None:
            stage = f" while {document.failed_stage}" if document.failed_stage else ""
            upload.error = f"{document.error.code}{stage}: {document.error.message}"
    for upload in unexplained.values():
        upload.error = upload.error or "the document failed"


def _show_ingest(run: IngestRun, target: Collection, *, waited: bool) -> None:
    table = Table(title=f"collection {escape(target.name)}")
    table.add_column("file", overflow="fold")
    table.add_column("status")
    table.add_column("chunks", justify="right")
    table.add_column("problem", overflow="fold")
    for upload in run.uploads:
        job = upload.job
        problem = upload.error or (f"{job.error.code}: {job.error.message}" if job and job.error else "")
        chunks = str(job.counts.chunks_written) if job and waited else "-"
        table.add_row(escape(upload.source), upload.status, chunks, escape(problem))
    out.print(table)
    if not waited:
        jobs = " ".join(upload.job.id for upload in run.uploads if upload.job)
        err.print(f"Not waiting; the jobs: {jobs}", style="dim")


# -- search -----------------------------------------------------------------------------------------


@command.command("search")
@click.argument("query", nargs=-1, required=True)
@click.option(
    "--collection",
    "-c",
    "collections_",
    multiple=True,
    metavar="NAME",
    help="Collection to search (repeat; default: all).",
)
@click.option("--top-k", "-k", type=click.IntRange(1, 1000), help="Most hits.")
@click.option("--retriever", "-r", help="Retriever: hybrid, vector, fulltext...")
@click.option("--json", "as_json", is_flag=True, help="Print the hits as JSON.")
@connection_options
@click.pass_context
def search(  # noqa: PLR0917
    ctx: click.Context,
    query: Sequence[str],
    collections_: Sequence[str],
    top_k: int | None,
    retriever: str | None,
    as_json: bool,
    url: str | None,
    api_key: str | None,
    timeout: float,
) -> None:
    """Search your documents for QUERY and print the best passages as a table."""
    with connect(ctx, url, api_key, timeout) as client:
        ids = [resolve_collection(client, name).id for name in collections_]
        results = client.search(" ".join(query), collection_ids=ids, top_k=top_k, retriever=retriever)
    if as_json:
        click.echo(results.model_dump_json(indent=2))
        return
    if not results.hits:
        out.print("No hits.")
        return
    table = Table("#", "score", "source", "page", "text", title=f"retriever {results.retriever}")
    for rank, hit in enumerate(results.hits, 1):
        text = " ".join(hit.text.split())
        if len(text) > TEXT_COLUMN_CHARS:
            text = text[: TEXT_COLUMN_CHARS - 1] + "…"
        page = str(hit.page) if hit.page is not None else ""
        table.add_row(str(rank), f"{hit.score:.3f}", escape(hit.source), page, escape(text))
    out.print(table)


# -- chat -------------------------------------------------------------------------------------------


@dataclass
class ChatOptions:
    collection_ids: list[str]
    conversation_id: str | None
    llm: str | None
    retriever: str | None
    top_k: int | None

    def start(self) -> dict[str, Any]:
        return {
            "collection_ids": self.collection_ids,
            "conversation_id": self.conversation_id,
            "llm": self.llm,
            "retriever": self.retriever,
            "top_k": self.top_k,
        }


@command.command("chat")
@click.argument("message", nargs=-1)
@click.option(
    "--collection",
    "-c",
    "collections_",
    multiple=True,
    metavar="NAME",
    help="Collection to answer from (repeat).",
)
@click.option("--conversation", "conversation_id", metavar="ID", help="Continue this conversation.")
@click.option("--llm", help="LLM to answer with, when the gateway's host allows a choice.")
@click.option("--retriever", "-r", help="Retriever: hybrid, vector, fulltext...")
@click.option("--top-k", "-k", type=click.IntRange(1, 1000), help="Sources to retrieve.")
@click.option("--sse", is_flag=True, help="Stream over server-sent events instead of the WebSocket.")
@click.option("--json", "as_json", is_flag=True, help="With a MESSAGE: print the whole answer as JSON.")
@connection_options
@click.pass_context
def chat(  # noqa: PLR0917
    ctx: click.Context,
    message: Sequence[str],
    collections_: Sequence[str],
    conversation_id: str | None,
    llm: str | None,
    retriever: str | None,
    top_k: int | None,
    sse: bool,
    as_json: bool,
    url: str | None,
    api_key: str | None,
    timeout: float,
) -> None:
    """Chat with your documents: the answer streams, then its sources are listed.

    With a MESSAGE, ask it and exit (status 1 when the answer did not
    complete). Without, chat interactively: Ctrl-C cancels an answer (the
    part written is kept), /new starts a new conversation, /quit or Ctrl-D
    exits.
    """
    if as_json and not message:
        raise click.UsageError("--json needs a MESSAGE")
    with connect(ctx, url, api_key, timeout, sse=sse) as client:
        options = ChatOptions(
            [resolve_collection(client, name).id for name in collections_],
            conversation_id,
            llm,
            retriever,
            top_k,
        )
        if message:
            answer = _turn(client.chat(" ".join(message), **options.start()), echo=not as_json)
            if as_json:
                click.echo(json.dumps(_answer_json(answer), indent=2, ensure_ascii=False))
            else:
                err.print(f"conversation {answer.conversation_id}", style="dim")
            sys.exit(0 if answer.complete else EXIT_FAILED)
        sys.exit(_interactive(client, options, collections_, sse=sse))


def _interactive(client: Client, options: ChatOptions, names: Sequence[str], *, sse: bool) -> int:
    where = ", ".join(names) or (
        "the conversation's collections" if options.conversation_id else "no collection"
    )
    err.print(
        f"Chatting with {escape(client.base_url)} over {escape(where)}. Ctrl-C cancels an answer; "
        "/new starts a new conversation; /quit or Ctrl-D exits.",
        style="dim",
    )
    session = None if sse else ChatSession(client)
    try:
        while True:
            try:
                line = input("you> ")
            except EOFError:
                return 0
            except KeyboardInterrupt:
                err.print("\n(bye)", style="dim")
                return EXIT_INTERRUPTED
            if line.strip() in QUIT:
                return 0
            if line.strip() == NEW:
                options.conversation_id = None
                err.print("(a new conversation starts with your next message)", style="dim")
                continue
            if not line.strip():
                continue
            stream = (
                session.turn(line, **options.start()) if session else client.chat(line, **options.start())
            )
            answer = _turn(stream, echo=True)
            options.conversation_id = answer.conversation_id or options.conversation_id
            out.print()
    finally:
        if session is not None:
            session.close()


def _turn(stream: ChatStream, *, echo: bool) -> Answer:
    """Stream one turn's answer to stdout (Ctrl-C cancels it), then list its sources."""
    with stream:
        while True:
            try:
                for event in stream:
                    if echo and isinstance(event, TokenEvent):
                        click.echo(event.text, nl=False)
                        sys.stdout.flush()
                break
            except KeyboardInterrupt:
                if stream.done:
                    break
                err.print("\n(cancelling the answer)", style="dim")
                stream.cancel()
    answer = stream.answer
    if echo:
        click.echo("")
        _show_sources(answer.citations)
        if answer.error is not None:
            err.print(f"error [{answer.error.code}]: {escape(answer.error.message)}", style="red")
        elif answer.quota is not None:
            err.print(
                f"(stopped: your {answer.quota.scope} token quota for the {answer.quota.period} is used up)"
            )
        elif answer.status == "cancelled":
            err.print("(answer cancelled; the part above is kept in the conversation)", style="dim")
    return answer


def _show_sources(citations: Sequence[Citation]) -> None:
    if not citations:
        return
    out.print("Sources:", style="bold")
    for citation in sorted(citations, key=lambda c: c.source_number):
        out.print(f"  {escape(source_line(citation))}")


def source_line(citation: Citation) -> str:
    where = citation.source + (f", page {citation.page}" if citation.page is not None else "")
    title = f"{citation.title} — " if citation.title and citation.title != citation.source else ""
    return f"[{citation.source_number}] {title}{where}"


def _answer_json(answer: Answer) -> dict[str, Any]:
    return {
        "conversation_id": answer.conversation_id,
        "message_id": answer.message_id,
        "status": answer.status,
        "answer": answer.text,
        "citations": [citation.model_dump(mode="json") for citation in answer.citations],
        "usage": answer.usage.model_dump(mode="json") if answer.usage else None,
        "error": answer.error.model_dump(mode="json", exclude={"type", "seq"}) if answer.error else None,
    }
