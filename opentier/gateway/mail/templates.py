"""Mail templates: ``<name>.txt`` (required) and ``<name>.html`` (optional) with ``$placeholders``.

The first line of the text template is ``Subject: ...``, then a blank line, then the body. A folder set
in ``mail.templates_dir`` overrides the built-in files of the same name, one file at a time. Values are
HTML-escaped in the HTML part.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from string import Template

from opentier.errors import ConfigError

SUBJECT_PREFIX = "Subject:"


@dataclass(frozen=True, slots=True)
class Rendered:
    """A rendered mail: its subject, its plain-text body and its HTML body, if the template has one."""

    subject: str
    text: str
    html: str | None


class Templates:
    """Finds and renders templates: ``override`` first, then the package's ``templates`` folder."""

    def __init__(self, override: Path | None = None) -> None:
        self._override = override

    def _read(self, filename: str) -> str | None:
        if self._override is not None:
            path = self._override / filename
            if path.is_file():
                return path.read_text(encoding="utf-8")
        packaged = resources.files(__package__).joinpath("templates", filename)
        return packaged.read_text(encoding="utf-8") if packaged.is_file() else None

    def render(self, name: str, values: dict[str, str]) -> Rendered:
        """The mail ``name`` with ``values`` filled in; a config error when the template is missing or
        names a value that is not given."""
        text = self._read(f"{name}.txt")
        if text is None:
            raise ConfigError(f"mail template {name}.txt is missing")
        head, _, body = text.partition("\n")
        if not head.startswith(SUBJECT_PREFIX):
            raise ConfigError(f"mail template {name}.txt must start with a 'Subject: ...' line")
        markup = self._read(f"{name}.html")
        try:
            subject = Template(head.removeprefix(SUBJECT_PREFIX).strip()).substitute(values)
            plain = Template(body.lstrip("\n")).substitute(values)
            rich = (
                None
                if markup is None
                else Template(markup).substitute({k: html.escape(v) for k, v in values.items()})
            )
        except (KeyError, ValueError) as err:
            raise ConfigError(f"mail template {name}: unknown or malformed placeholder {err}") from None
        return Rendered(subject=subject, text=plain, html=rich)
