"""OptionTable: a plugin's option table read with checks that name the table, the key and the value."""

from __future__ import annotations

from pathlib import Path

import pytest

from opentier.errors import ConfigError
from opentier.plugin_options import OptionTable

KNOWN = ("model", "retries", "temperature", "stream", "cache", "extra")


def test_values_of_the_right_kind_are_read_and_absent_ones_are_none() -> None:
    table = OptionTable(
        "demo",
        {
            "model": " tiny ",
            "retries": 0,
            "temperature": 1,
            "stream": False,
            "cache": "~/m",
            "extra": {"a": 1},
        },
        KNOWN,
    )
    assert table.text("model") == "tiny"
    assert table.whole("retries", minimum=0) == 0
    assert table.number("temperature", low=0, high=2) == 1.0
    assert table.flag("stream") is False
    assert table.path("cache") == Path("~/m").expanduser()
    assert table.table("extra") == {"a": 1}
    assert OptionTable("demo", {}, KNOWN).whole("retries", minimum=0) is None


def test_an_unknown_key_is_refused_with_the_known_ones() -> None:
    with pytest.raises(
        ConfigError, match=r"\[plugins.options.demo\] has unknown option\(s\) modle; known: model"
    ):
        OptionTable("demo", {"modle": "x"}, KNOWN)


@pytest.mark.parametrize(
    ("raw", "read", "message"),
    [
        ({"model": "  "}, lambda t: t.text("model"), "model must be a non-empty text, not '  '"),
        ({"retries": True}, lambda t: t.whole("retries", minimum=0), "retries must be a whole number >= 0"),
        (
            {"retries": -1},
            lambda t: t.whole("retries", minimum=0),
            "retries must be a whole number >= 0, not -1",
        ),
        (
            {"temperature": 3},
            lambda t: t.number("temperature", low=0, high=2),
            "temperature must be a number from 0 to 2, not 3",
        ),
        ({"stream": "yes"}, lambda t: t.flag("stream"), "stream must be true or false, not 'yes'"),
        ({"cache": 5}, lambda t: t.path("cache"), "cache must be a path, not 5"),
        ({"extra": [1]}, lambda t: t.table("extra"), "extra must be a table, not \\[1\\]"),
    ],
)
def test_a_wrong_value_names_the_table_the_key_and_the_value(raw: dict, read, message: str) -> None:  # type: ignore[no-untyped-def, type-arg]
    with pytest.raises(ConfigError, match=r"\[plugins.options.demo\] " + message):
        read(OptionTable("demo", raw, KNOWN))
