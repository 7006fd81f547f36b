"""``opentier eval``: retrieval quality and speed of each retriever on a judged collection."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Sequence
from pathlib import Path

import click
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from opentier.cli import CliState, pass_state
from opentier.cli.host_cmd import run
from opentier.cli.views import err, out
from opentier.config import Settings
from opentier.db.embedded import EmbeddedPostgres
from opentier.db.engine import create_engine
from opentier.db.migrate import migrate
from opentier.db.tenancy import internal_scope
from opentier.engine.datasets.beir import DEFAULT_SPLIT
from opentier.engine.datasets.judged import JudgedCollection
from opentier.engine.datasets.layouts import open_judged
from opentier.engine.eval_run import DEFAULT_DEPTH, EvalReport, Evaluation, percentile
from opentier.plugin_manager import load_plugins

DEFAULT_RETRIEVERS = "fulltext,vector,hybrid"


@click.command("eval")
@click.option(
    "--dataset",
    "path",
    required=True,
    type=click.Path(path_type=Path, exists=True, file_okay=False),
    help="Folder of a judged collection: BEIR (corpus.jsonl, queries.jsonl, qrels/<split>.tsv) or "
    "Cranfield (cran.all.1400, cran.qry, cranqrel).",
)
@click.option(
    "--retrievers",
    default=DEFAULT_RETRIEVERS,
    show_default=True,
    help="Comma-separated retriever names, evaluated in this order.",
)
@click.option(
    "--split", default=DEFAULT_SPLIT, show_default=True, help="BEIR judgments to use: qrels/<split>.tsv."
)
@click.option("--limit-queries", type=click.IntRange(min=1), help="Evaluate only the first N judged queries.")
@click.option("--graded", is_flag=True, help="Graded gains for nDCG (the judged grade); default binary.")
@click.option(
    "--reranker",
    default="none",
    show_default=True,
    help="Reranker applied after each retriever (`none` evaluates the retrievers alone).",
)
@click.option(
    "--depth",
    type=click.IntRange(min=10),
    default=DEFAULT_DEPTH,
    show_default=True,
    help="Documents ranked per query (recall@100 needs 100); each search asks for twice as many "
    "chunks (at most retrieval.max_top_k), as a document may have several.",
)
@click.option(
    "--language",
    default="english",
    show_default=True,
    help="Text-search language of the scratch collection (a PostgreSQL configuration).",
)
@click.option("--keep", is_flag=True, help="Keep the scratch collection (and print its tenant) afterwards.")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON instead of a table.")
@pass_state
def command(  # noqa: PLR0917 (click passes every option positionally)
    state: CliState,
    path: Path,
    retrievers: str,
    split: str,
    limit_queries: int | None,
    graded: bool,
    reranker: str,
    depth: int,
    language: str,
    keep: bool,
    as_json: bool,
) -> None:
    """Measure retrieval quality on a judged collection: nDCG@10, recall@10/100, MRR@10.

    \b
    Ingests the collection's documents (title + " " + text, as BEIR does)
    through the real ingestion pipeline into a scratch collection of a
    scratch tenant, searches every judged query with each retriever, and
    prints one row per retriever with its quality, the p50 search latency
    (query embedding excluded; it is shown apart) and the total time, plus
    the ingestion time. Relevance is binary unless --graded. The scratch
    collection is deleted at the end unless --keep.

    \b
    Uses the configured database like `opentier up`: the embedded
    PostgreSQL (started for the run when it is not running, and stopped
    again), or database.url; migrations are applied. Needs no running host.

    \b
    Examples:
      opentier eval --dataset ../shared/data/cranfield
      opentier eval --dataset ./scifact --split test --retrievers hybrid --json
    """
    names = [name.strip() for name in retrievers.split(",") if name.strip()]
    if not names:
        raise click.UsageError("--retrievers needs at least one retriever name")
    dataset = open_judged(path, split).first_queries(limit_queries)
    for note in dataset.notes:
        err.print(f"note: {note}")
    settings = state.settings
    with _database(settings):
        report = run(
            _evaluate(
                settings,
                dataset,
                names,
                graded=graded,
                reranker=reranker,
                depth=depth,
                language=language,
                keep=keep,
            )
        )
    if as_json:
        click.echo(json.dumps(report.as_dict(), indent=2))
    else:
        _print(report)


@contextlib.contextmanager
def _database(settings: Settings) -> Iterator[None]:
    """The embedded PostgreSQL runs for the evaluation; one that was stopped is stopped again."""
    if settings.database.url is not None:
        yield
        return
    server = EmbeddedPostgres.from_settings(settings)
    was_running = server.status().running
    if not was_running:
        err.print(f"starting the embedded PostgreSQL in {server.data_dir}")
        server.start()
    try:
        yield
    finally:
        if not was_running:
            server.stop()


async def _evaluate(
    settings: Settings,
    dataset: JudgedCollection,
    retrievers: Sequence[str],
    *,
    graded: bool,
    reranker: str,
    depth: int,
    language: str,
    keep: bool,
) -> EvalReport:
    await migrate(settings)
    plugins = load_plugins(settings)
    for failure in plugins.failures:
        err.print(f"warning: plugin {failure.name} did not load: {failure.error}")
    # Row-level security binds the evaluation too: its scratch collections are the host's own work.
    engine = create_engine(settings, tenancy=True)
    try:
        with _Bar() as bar, internal_scope():
            return await Evaluation(engine, plugins.registry, settings).run(
                dataset,
                retrievers,
                graded=graded,
                depth=depth,
                reranker=reranker,
                language=language,
                keep=keep,
                progress=bar.update,
            )
    finally:
        await engine.dispose()


class _Bar:
    """One transient progress bar per stage (indexing, embedding, each retriever), on stderr."""

    def __init__(self) -> None:
        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=err,
            transient=True,
        )
        self._tasks: dict[str, TaskID] = {}

    def __enter__(self) -> _Bar:
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()

    def update(self, stage: str, done: int, total: int | None) -> None:
        if stage not in self._tasks:
            for task in self._tasks.values():
                self._progress.update(task, visible=False)
            self._tasks[stage] = self._progress.add_task(stage, total=total)
        self._progress.update(self._tasks[stage], completed=done, total=total)


def _print(report: EvalReport) -> None:
    dataset = report.dataset
    relevance = "graded" if report.graded else "binary"
    table = Table(
        title=f"{dataset.name} ({dataset.layout}): {len(dataset.queries)} queries, {relevance} relevance",
        title_justify="left",
    )
    table.add_column("retriever")
    for column in ("nDCG@10", "R@10", "R@100", "MRR@10", "queries", "p50 ms", "total s"):
        table.add_column(column, justify="right")
    for result in report.runs:
        metrics = result.metrics
        table.add_row(
            result.retriever,
            f"{metrics.ndcg_10:.3f}",
            f"{metrics.recall_10:.3f}",
            f"{metrics.recall_100:.3f}",
            f"{metrics.mrr_10:.3f}",
            str(metrics.queries),
            f"{result.p50_ms:.1f}",
            f"{result.seconds:.1f}",
        )
    out.print(table)
    ingested = report.ingested
    if ingested is not None:
        counts = ingested.counts
        not_indexed = f", {ingested.empty} empty skipped" if ingested.empty else ""
        out.print(
            f"ingestion: {ingested.documents} documents ({counts.created} indexed, {counts.dropped} dropped, "
            f"{counts.failed} failed{not_indexed}) into {counts.chunks_written} chunks in "
            f"{ingested.seconds:.1f} s"
        )
    out.print(
        f"query embedding ({report.collection.embedder}, one query at a time): "
        f"p50 {percentile(report.embedding_latencies, 50) * 1000:.1f} ms, excluded from p50 above"
    )
    if report.kept:
        out.print(
            f"kept: collection {report.collection.name!r} ({report.collection.id}) of tenant "
            f"{report.tenant_id!r}"
        )
