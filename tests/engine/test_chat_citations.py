"""Citation markers verified as an answer streams: what a reader is shown, and what gets cited."""

from __future__ import annotations

from opentier.engine.chat.citations import MAX_MARKER_CHARS, CitationFilter


def run(filter_: CitationFilter, deltas: list[str]) -> tuple[list[str], list[tuple[int, ...]]]:
    shown, cited = [], []
    for delta in [*deltas, None]:
        verified = filter_.feed(delta) if delta is not None else filter_.finish()
        shown.append(verified.text)
        cited.append(verified.new_citations)
    return shown, cited


def test_markers_of_given_sources_are_cited_once_in_order_of_appearance() -> None:
    filter_ = CitationFilter({1, 2, 3})
    shown, cited = run(filter_, ["Lift [2]. Drag [1, 3]", " and again [2][1]."])
    assert "".join(shown) == "Lift [2]. Drag [1, 3] and again [2][1]."
    assert cited[:2] == [(2, 1, 3), ()]
    assert filter_.cited == [2, 1, 3] and filter_.unverified == []


def test_a_marker_split_across_deltas_is_held_back_and_nothing_more() -> None:
    filter_ = CitationFilter({1, 2, 3})
    shown, cited = run(filter_, ["Wings lift [", "1", ", ", "3] and more."])
    assert shown == ["Wings lift ", "", "", "[1, 3] and more.", ""]
    assert cited[3] == (1, 3)


def test_a_number_that_names_no_given_source_is_dropped() -> None:
    filter_ = CitationFilter({1, 2, 3})
    shown, _cited = run(filter_, ["See [7]. Also [2, 7", "] and [0]."])
    assert "".join(shown) == "See . Also [2] and ."
    assert filter_.cited == [2] and filter_.unverified == [7, 7, 0]


def test_flag_mode_keeps_the_marker_visibly_marked() -> None:
    filter_ = CitationFilter({1, 2, 3}, mode="flag", flag_format="{number}?")
    shown, _cited = run(filter_, ["See [7] and [2, 9]."])
    assert "".join(shown) == "See [7?] and [2, 9?]."
    assert filter_.cited == [2]


def test_brackets_that_cannot_become_a_marker_are_sent_at_once() -> None:
    filter_ = CitationFilter({1})
    assert filter_.feed("a list [x] and [").text == "a list [x] and "
    assert filter_.feed("see above]").text == "[see above]"
    assert filter_.feed("[1,,2]").text == "[1,,2]"
    long_tail = "[1, " + "2, " * MAX_MARKER_CHARS
    assert filter_.feed(long_tail).text == long_tail  # too long to be a marker: not held


def test_an_unfinished_marker_at_the_end_is_plain_text() -> None:
    filter_ = CitationFilter({1})
    assert filter_.feed("The end [1").text == "The end "
    finished = filter_.finish()
    assert (finished.text, finished.new_citations) == ("[1", ())
    assert filter_.cited == []
