"""Readers of judged collections, on small collections written here with the real files' quirks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from opentier.engine.datasets import cranfield
from opentier.engine.datasets.judged import DatasetError, JudgedDocument
from opentier.engine.datasets.layouts import open_judged

#: The shared copy of the collection, beside the checkout (never copied into the project).
CRANFIELD = Path(__file__).resolve().parents[3] / "shared" / "data" / "cranfield"

# --- Cranfield --------------------------------------------------------------------------------


def write_cranfield(folder: Path) -> Path:
    """Three documents (one empty), three queries whose `.I` are not their positions, judgments."""
    folder.mkdir()
    documents = (
        ".I 1\n.T\nflow past a flat plate .\n.A\nsmith,j.\n.B\nj. ae. 1958.\n"
        ".W  \nflow past a flat plate .\n  the boundary layer of a flat plate\nwas measured .\n"
        ".I 2\n.T\n.A\n.B\n.W\n"  # empty, like 471 and 995
        ".I 3\n.T\nheat transfer in slabs .\n.A\n.B\n.W \nheat transfer in slabs .\nthe caf\xe9 slab .\n"
    )
    queries = (
        ".I 001\n.W\nwhat is the boundary layer\nof a flat plate .\n"
        ".I 002\n.W  \nhow is heat transferred .\n"
        ".I 004\n.W\nwhat about slabs .\n"
    )
    judgments = "1 1 2 \n1 3 -1\n2 3 1\n2 1 4\n3 3 3\n3 1 -1\n"
    for name, text in (("cran.all.1400", documents), ("cran.qry", queries), ("cranqrel", judgments)):
        (folder / name).write_bytes(text.replace("\n", "\r\n").encode("latin-1"))
    return folder


def test_cranfield_documents_with_crlf_and_padded_field_markers(tmp_path: Path) -> None:
    collection = open_judged(write_cranfield(tmp_path / "cran"))
    assert collection.layout == "cranfield"
    documents = list(collection.documents())
    assert documents[0] == JudgedDocument(
        "1",
        "flow past a flat plate .",
        "flow past a flat plate . the boundary layer of a flat plate was measured .",
    )
    assert documents[0].indexed_text.startswith("flow past a flat plate . flow past")
    assert documents[1] == JudgedDocument("2", "", "")
    assert documents[1].indexed_text == ""
    assert documents[2].text == "heat transfer in slabs . the caf\xe9 slab ."  # Latin-1 read as such
    assert "\r" not in "".join(d.text + d.title for d in documents)


def test_cranfield_queries_are_numbered_by_position_and_codes_become_grades(tmp_path: Path) -> None:
    collection = open_judged(write_cranfield(tmp_path / "cran"))
    assert [(q.id, q.text) for q in collection.queries] == [
        ("1", "what is the boundary layer of a flat plate ."),
        ("2", "how is heat transferred ."),
        ("3", "what about slabs ."),  # `.I 004` is the third query, judged as query 3
    ]
    # -1 lines are dropped; code 1 (complete answer) is the highest grade, code 4 the lowest.
    assert collection.qrels == {"1": {"1": 3}, "2": {"3": 4, "1": 1}, "3": {"3": 2}}
    # The functions the ingestion benchmark uses keep working.
    folder = tmp_path / "cran"
    assert cranfield.judgments(folder) == {"1": {"1"}, "2": {"3", "1"}, "3": {"3"}}
    assert [q.id for q in cranfield.queries(folder)] == ["1", "2", "3"]


def test_cranfield_missing_file(tmp_path: Path) -> None:
    folder = write_cranfield(tmp_path / "cran")
    (folder / "cranqrel").unlink()
    with pytest.raises(DatasetError, match="cranqrel is missing"):
        open_judged(folder)


# --- BEIR -------------------------------------------------------------------------------------


def write_beir(folder: Path) -> Path:
    (folder / "qrels").mkdir(parents=True)
    corpus = [
        {"_id": "d1", "title": "Penguins", "text": "Penguins live in Antarctica.", "metadata": {}},
        {"_id": "d2", "title": "", "text": "Volcanoes erupt lava."},
        {"_id": 3, "text": "Chess openings."},
    ]
    queries = [
        {"_id": "q1", "text": "where do penguins live"},
        {"_id": "q2", "text": "what do volcanoes do"},
        {"_id": "q3", "text": "unjudged in test"},
    ]
    (folder / "corpus.jsonl").write_text("\n".join(json.dumps(r) for r in corpus) + "\n\n")
    (folder / "queries.jsonl").write_text("\n".join(json.dumps(r) for r in queries) + "\n")
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td2\t2\nq2\t3\t0\n")
    (folder / "qrels" / "dev.tsv").write_text("query-id\tcorpus-id\tscore\r\nq3\t3\t1\r\nq9\td1\t1\r\n")
    return folder


def test_beir_reads_the_test_split_by_default(tmp_path: Path) -> None:
    collection = open_judged(write_beir(tmp_path / "tiny"))
    assert (collection.layout, collection.name) == ("beir", "tiny")
    documents = list(collection.documents())
    assert [(d.id, d.indexed_text) for d in documents] == [
        ("d1", "Penguins Penguins live in Antarctica."),
        ("d2", "Volcanoes erupt lava."),
        ("3", "Chess openings."),
    ]
    # Only the judged queries of the split are evaluated; grade 0 stays a judgment.
    assert [q.id for q in collection.queries] == ["q1", "q2"]
    assert collection.qrels == {"q1": {"d1": 1}, "q2": {"d2": 2, "3": 0}}
    assert collection.notes == ()


def test_beir_split_is_chosen_and_unknown_queries_are_noted(tmp_path: Path) -> None:
    collection = open_judged(write_beir(tmp_path / "tiny"), split="dev")
    assert [q.id for q in collection.queries] == ["q3"]
    assert collection.qrels == {"q3": {"3": 1}}
    assert len(collection.notes) == 1 and "q9" in collection.notes[0]


def test_beir_unknown_split_lists_the_splits(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"split 'train'.*splits: dev, test"):
        open_judged(write_beir(tmp_path / "tiny"), split="train")


def test_beir_malformed_lines_are_named(tmp_path: Path) -> None:
    folder = write_beir(tmp_path / "tiny")
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\tyes\n")
    with pytest.raises(DatasetError, match=r"test.tsv:2: score 'yes'"):
        open_judged(folder)
    (folder / "corpus.jsonl").write_text('{"_id": "d1", "text": "ok"}\n{"text": "no id"}\n')
    (folder / "qrels" / "test.tsv").write_text("q1\td1\t1\n")  # no header: fine
    collection = open_judged(folder)
    with pytest.raises(DatasetError, match=r"corpus.jsonl:2: the record has no `_id`"):
        list(collection.documents())


def test_first_queries_keeps_their_judgments_only(tmp_path: Path) -> None:
    collection = open_judged(write_beir(tmp_path / "tiny")).first_queries(1)
    assert [q.id for q in collection.queries] == ["q1"]
    assert collection.qrels == {"q1": {"d1": 1}}
    with pytest.raises(DatasetError):
        open_judged(tmp_path / "tiny").first_queries(0)


# --- layout detection -------------------------------------------------------------------------


def test_a_folder_of_another_layout_is_refused_with_what_is_expected(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(DatasetError, match=r"neither a BEIR collection \(corpus.jsonl.*nor the Cranfield"):
        open_judged(tmp_path)
    with pytest.raises(DatasetError, match="is not a folder"):
        open_judged(tmp_path / "missing")


@pytest.mark.skipif(
    not (CRANFIELD / "cran.all.1400").is_file(), reason=f"the Cranfield collection is not at {CRANFIELD}"
)
def test_the_real_cranfield_collection() -> None:
    collection = open_judged(CRANFIELD)
    documents = list(collection.documents())
    assert len(documents) == 1400
    assert [d.id for d in documents if not d.indexed_text] == ["471", "995"]
    assert len(collection.queries) == 225
    assert sum(len(judged) for judged in collection.qrels.values()) == 1837 - 225  # -1 lines dropped
