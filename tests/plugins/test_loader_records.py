"""The ``records`` loader, loaded through its entry point: JSON Lines and CSV, one document per record."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from opentier.components import Block, Document, Loader, Source
from opentier.config import Settings
from opentier.errors import ConfigError, DocumentLoadError
from opentier.plugin_manager import PluginSelection, PluginSystem, load_plugins

# Debian's distro-info-data ships the release history of Debian and Ubuntu as CSV.
DEBIAN_RELEASES = Path("/usr/share/distro-info/debian.csv")
UBUNTU_RELEASES = Path("/usr/share/distro-info/ubuntu.csv")


@pytest.fixture
def system() -> Iterator[PluginSystem]:
    system = load_plugins(selection=PluginSelection(allow=["records"]))
    assert [info.distribution for info in system.loaded] == ["opentier-loader-records"]
    yield system
    # The plugin object is the entry point's, shared by every PluginSystem in this process: reset it.
    system.pm.hook.opentier_startup(settings=Settings())


@pytest.fixture
def loader(system: PluginSystem) -> Loader:
    return system.registry.get_typed(Loader, "records")


async def load_all(loader: Loader, source: Source) -> list[Document]:
    return [document async for document in loader.load(source)]


def jsonl(*records: Any) -> bytes:
    return b"".join((r if isinstance(r, bytes) else json.dumps(r).encode()) + b"\n" for r in records)


async def test_one_document_per_json_line(loader: Loader, tmp_path: Path) -> None:
    path = tmp_path / "posts.jsonl"
    path.write_bytes(
        jsonl(
            {"text": "First post.\n\nSecond paragraph.", "title": "Hello", "lang": "en", "score": 3},
            b"",  # blank lines are allowed
            {"text": "Another post.", "tags": ["a", "b"], "author": {"name": "Ada"}},
        )
    )
    documents = await load_all(loader, Source(uri="feeds/posts.jsonl", path=path, metadata={"feed": "x"}))
    first, second = documents
    assert first.source == "feeds/posts.jsonl#L1"
    assert first.title == "Hello"
    assert first.blocks == [Block("First post."), Block("Second paragraph.")]
    assert first.media_type == "application/jsonl"
    assert first.metadata == {"feed": "x", "lang": "en", "score": 3, "line": 1}
    assert second.source == "feeds/posts.jsonl#L3" and second.title is None
    assert second.metadata == {"feed": "x", "tags": ["a", "b"], "author": {"name": "Ada"}, "line": 3}


async def test_fields_chosen_by_options(loader: Loader) -> None:
    record = {"id": "q-17", "question": "What is a heron?", "answer": "A wading bird.", "heading": "Herons"}
    data = jsonl({**record, "meta": {"topic": "birds"}, "internal": "x"})
    options = {
        "text_field": ["question", "answer"],
        "title_field": "heading",
        "id_field": "id",
        "metadata_fields": ["meta.topic", "missing"],
    }
    (document,) = await load_all(loader, Source(uri="faq.jsonl", data=data, options=options))
    assert document.source == "faq.jsonl#q-17"
    assert document.title == "Herons"
    assert document.text == "What is a heron?\n\nA wading bird."
    assert document.metadata == {"meta.topic": "birds", "line": 1}


async def test_non_string_text_is_written_as_json(loader: Loader) -> None:
    data = jsonl({"text": {"k": [1, 2]}}, {"text": 42}, {"text": None})
    documents = await load_all(loader, Source(uri="mixed.jsonl", data=data))
    assert [d.text for d in documents] == ['{"k": [1, 2]}', "42", ""]
    assert documents[2].blocks == []  # empty, not malformed: a cleaner drops it with its reason


async def test_csv_rows_with_quoted_newlines_and_short_rows(loader: Loader, tmp_path: Path) -> None:
    path = tmp_path / "notes.csv"
    path.write_bytes(
        "\ufeffid,title,text,rating,comment\n"
        '1,Heron,"Stands still.\n\nStrikes fast.",5,\n'
        "\n"
        "2,Egret,White bird.\n".encode()
    )
    options = {"id_field": "id"}
    first, second = await load_all(loader, Source(uri="notes.csv", path=path, options=options))
    assert first.source == "notes.csv#1" and first.title == "Heron"
    assert first.blocks == [Block("Stands still."), Block("Strikes fast.")]
    assert first.metadata == {"rating": "5", "line": 2}  # the empty comment is left out
    assert first.media_type == "text/csv"
    assert second.source == "notes.csv#2" and second.metadata == {"line": 6}  # short row: no rating


async def test_tsv_and_explicit_format(loader: Loader) -> None:
    data = b"text\tkind\nTabbed words\tnote\n"
    (document,) = await load_all(loader, Source(uri="notes.tsv", data=data))
    assert document.text == "Tabbed words" and document.metadata == {"kind": "note", "line": 2}
    options = {"format": "csv", "delimiter": ";"}
    source = Source(uri="export.txt", data=b"text;kind\nSemi;colon\n", options=options)
    (document,) = await load_all(loader, source)
    assert document.text == "Semi" and document.media_type == "text/csv"


def test_accepts_by_media_type_or_extension(loader: Loader) -> None:
    for uri in ("a.jsonl", "b.NDJSON", "c.csv", "d.tsv"):
        assert loader.accepts(Source(uri=uri)), uri
    assert loader.accepts(Source(uri="stream", media_type="application/x-ndjson"))
    assert loader.accepts(Source(uri="export", media_type="text/csv; charset=utf-8"))
    assert not loader.accepts(Source(uri="data.json"))


async def test_unknown_format_is_a_load_error(loader: Loader) -> None:
    with pytest.raises(DocumentLoadError, match="set the source option 'format'"):
        await load_all(loader, Source(uri="data.bin", data=b"{}\n"))


BAD_JSONL = jsonl(
    {"text": "good one"},
    b"{not json",
    b"[1, 2, 3]",
    {"body": "no text field"},
    b"\xff\xfe broken bytes",
    {"text": "good two"},
)


async def test_report_mode_yields_good_records_then_one_error(loader: Loader) -> None:
    seen: list[str] = []
    with pytest.raises(DocumentLoadError) as caught:
        async for document in loader.load(Source(uri="mixed.jsonl", data=BAD_JSONL)):
            seen.append(document.source)
    assert seen == ["mixed.jsonl#L1", "mixed.jsonl#L6"]
    message = str(caught.value)
    assert message.startswith("mixed.jsonl: 4 malformed records skipped, the others were loaded: ")
    assert "line 2: invalid JSON: Expecting property name enclosed in double quotes (column 2)" in message
    assert "line 3: a JSON array, not an object" in message
    assert "line 4: no field 'text' (fields: body)" in message
    assert "line 5: bytes that are not utf-8 (column 1)" in message
    assert caught.value.stage == "load"


async def test_skip_mode_logs_and_does_not_raise(loader: Loader, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="opentier_loader_records"):
        documents = await load_all(
            loader, Source(uri="mixed.jsonl", data=BAD_JSONL, options={"on_error": "skip"})
        )
    assert [d.text for d in documents] == ["good one", "good two"]
    assert "4 malformed records skipped" in caplog.text and "line 2: invalid JSON" in caplog.text


async def test_fail_mode_stops_at_the_first_bad_record(loader: Loader) -> None:
    seen: list[str] = []
    with pytest.raises(
        DocumentLoadError, match=r"reading stopped after 1 malformed record .*line 2: invalid"
    ):
        async for document in loader.load(
            Source(uri="m.jsonl", data=BAD_JSONL, options={"on_error": "fail"})
        ):
            seen.append(document.text)
    assert seen == ["good one"]


async def test_a_file_of_garbage_stops_after_max_errors(loader: Loader) -> None:
    garbage = b"\n".join(os.urandom(40).replace(b"\n", b"") for _ in range(10_000))
    with pytest.raises(DocumentLoadError, match=r"reading stopped after 100 malformed records.*and 95 more"):
        await load_all(loader, Source(uri="garbage.jsonl", data=garbage))


async def test_id_field_missing_is_malformed(loader: Loader) -> None:
    data = jsonl({"id": 7, "text": "seven"}, {"text": "anonymous"}, {"id": ["x"], "text": "list id"})
    with pytest.raises(
        DocumentLoadError, match=r"line 2: no id in field 'id'; line 3: .* not a string or number"
    ):
        async for document in loader.load(Source(uri="ids.jsonl", data=data, options={"id_field": "id"})):
            assert document.source == "ids.jsonl#7"


async def test_over_long_lines_are_skipped_unread(loader: Loader) -> None:
    data = jsonl({"text": "short"}, {"text": "x" * 5000}, {"text": "after"})
    options = {"max_record_bytes": 1024, "on_error": "skip"}
    documents = await load_all(loader, Source(uri="long.jsonl", data=data, options=options))
    assert [(d.text, d.metadata["line"]) for d in documents] == [("short", 1), ("after", 3)]


async def test_csv_problems_are_reported_by_line(loader: Loader) -> None:
    data = (
        b"title,text\n"
        b"A,fine\n"
        b"B,too,many,values\n"
        b"C,caf\xe9 in latin-1\n"
        b'D,"good again"\n'
        b'E,"never closed\n'
        b"F,swallowed by the open quote\n"
    )
    seen: list[str] = []
    with pytest.raises(DocumentLoadError) as caught:
        async for document in loader.load(Source(uri="t.csv", data=data)):
            seen.append(document.title or "")
    assert seen == ["A", "D"]
    message = str(caught.value)
    assert "line 3: 4 values but the header has 2 columns" in message
    assert "line 4: bytes that are not utf-8 (line 4, column 6)" in message
    assert "line 6: malformed CSV: unexpected end of data" in message


async def test_csv_header_problems_stop_before_any_document(loader: Loader) -> None:
    with pytest.raises(DocumentLoadError, match="names a column twice: text"):
        await load_all(loader, Source(uri="d.csv", data=b"text,text\na,b\n"))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"text_feild": "body"}, r"invalid records options: text_feild: Extra inputs are not permitted"),
        ({"on_error": "ignore"}, "on_error: Input should be 'report', 'skip' or 'fail'"),
        ({"encoding": "utf-16"}, "not ASCII-compatible"),
        ({"text_field": []}, "text_field: Value error, name at least one field"),
    ],
)
async def test_bad_source_options_are_a_load_error(
    loader: Loader, options: dict[str, Any], message: str
) -> None:
    with pytest.raises(DocumentLoadError, match=message):
        await load_all(loader, Source(uri="a.jsonl", data=b"{}", options=options))


async def test_defaults_come_from_the_plugin_settings(system: PluginSystem, loader: Loader) -> None:
    settings = Settings(plugins={"options": {"records": {"text_field": "body", "id_field": "key"}}})  # type: ignore[arg-type]
    system.pm.hook.opentier_startup(settings=settings)
    data = jsonl({"key": "k1", "body": "From the body.", "text": "ignored"})
    (document,) = await load_all(loader, Source(uri="a.jsonl", data=data))
    assert (document.source, document.text) == ("a.jsonl#k1", "From the body.")
    assert document.metadata == {"text": "ignored", "line": 1}
    # A source's own options win over the defaults.
    (document,) = await load_all(loader, Source(uri="a.jsonl", data=data, options={"text_field": "text"}))
    assert (document.source, document.text) == ("a.jsonl#k1", "ignored")


def test_bad_plugin_settings_stop_startup(system: PluginSystem) -> None:
    settings = Settings(plugins={"options": {"records": {"max_errors": -1}}})  # type: ignore[arg-type]
    with pytest.raises(
        ConfigError, match=r"\[plugins.options.records\]: max_errors: Input should be greater"
    ):
        system.pm.hook.opentier_startup(settings=settings)


async def test_documents_arrive_while_the_file_is_still_being_written(loader: Loader, tmp_path: Path) -> None:
    """Streaming: the first document is yielded before the rest of the file exists (a named pipe)."""
    fifo = tmp_path / "live.jsonl"
    os.mkfifo(fifo)
    first_received = threading.Event()

    def writer() -> None:
        with fifo.open("wb") as pipe:
            pipe.write(jsonl({"text": "record 1"}))
            pipe.flush()
            first_received.wait(timeout=30)  # the rest is written only once the first is out
            pipe.write(jsonl(*({"text": f"record {n}"} for n in range(2, 6))))

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    texts: list[str] = []
    async with asyncio.timeout(30):
        async for document in loader.load(Source(uri="live.jsonl", path=fifo)):
            texts.append(document.text)
            first_received.set()
    thread.join(timeout=5)
    assert texts == [f"record {n}" for n in range(1, 6)]


async def test_memory_stays_bounded_for_100k_lines(loader: Loader, tmp_path: Path) -> None:
    path = tmp_path / "big.jsonl"
    with path.open("wb") as out:
        for n in range(100_000):
            out.write(
                jsonl({"id": n, "text": f"Record number {n} talks about herons and estuaries.", "n": n})
            )
    size = path.stat().st_size
    assert size > 7 * 2**20

    count = 0
    tracemalloc.start()
    try:
        async for document in loader.load(Source(uri="big.jsonl", path=path, options={"id_field": "id"})):
            count += 1
            if count == 1:
                assert document.source == "big.jsonl#0"
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == 100_000
    assert peak < 2 * 2**20, f"peak {peak / 2**20:.1f} MiB while reading a {size / 2**20:.1f} MiB file"


@pytest.mark.skipif(
    not DEBIAN_RELEASES.is_file(), reason=f"{DEBIAN_RELEASES} absent (Debian package distro-info-data)"
)
async def test_real_world_debian_release_history(loader: Loader) -> None:
    options = {"text_field": ["codename", "version"], "id_field": "series"}
    documents = await load_all(loader, Source(uri="debian.csv", path=DEBIAN_RELEASES, options=options))
    by_source = {d.source: d for d in documents}
    buzz = by_source["debian.csv#buzz"]
    assert buzz.text == "Buzz\n\n1.1" and buzz.metadata["line"] == 2
    assert buzz.metadata["release"] == "1996-06-17"
    bookworm = by_source["debian.csv#bookworm"]
    assert bookworm.text == "Bookworm\n\n12"
    assert bookworm.metadata["release"] == "2023-06-10"
    assert by_source["debian.csv#sid"].text == "Sid"  # no version: only the codename
    # Rows shorter than the header (no LTS dates yet) are normal and load.
    assert "eol-lts" not in buzz.metadata and "eol-lts" in bookworm.metadata


@pytest.mark.skipif(
    not UBUNTU_RELEASES.is_file(), reason=f"{UBUNTU_RELEASES} absent (Debian package distro-info-data)"
)
async def test_real_world_ubuntu_release_history(loader: Loader) -> None:
    options = {"text_field": "codename", "id_field": "series", "metadata_fields": ["version", "release"]}
    documents = await load_all(loader, Source(uri="ubuntu.csv", path=UBUNTU_RELEASES, options=options))
    jammy = next(d for d in documents if d.source == "ubuntu.csv#jammy")
    assert jammy.text == "Jammy Jellyfish"
    assert jammy.metadata == {"version": "22.04 LTS", "release": "2022-04-21", "line": jammy.metadata["line"]}
