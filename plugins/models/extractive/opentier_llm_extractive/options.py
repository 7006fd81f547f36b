"""The plugin's options, from ``[plugins.options.extractive]``, and the per-request ones."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from opentier.errors import ConfigError, LLMRequestError

#: Options a request may set (``llm_options`` of a chat request), a subset of the plugin's.
REQUEST_KEYS = ("max_sentences", "min_coverage")
OPTION_KEYS = (
    "context_window",
    "max_sentences",
    "min_coverage",
    "words_per_delta",
    "earlier_turns_weight",
    "no_answer",
    "no_sources",
)

NO_ANSWER = "The sources I was given do not answer this question."
NO_SOURCES = "I was given no sources to answer from, so I cannot answer this question."


@dataclass(frozen=True, slots=True)
class ExtractiveOptions:
    """Validated options (defaults shown)."""

    #: Tokens (as :func:`~opentier_llm_extractive.text.count_tokens` counts them) of prompt and answer
    #: together; the chat orchestration budgets history and sources with it.
    context_window: int = 16384
    #: Most sentences in one answer.
    max_sentences: int = 4
    #: Least share (0 to 1) of the question's weighted terms a sentence must contain to be quoted.
    min_coverage: float = 0.2
    #: Words per streamed text delta.
    words_per_delta: int = 3
    #: Weight (0 to 1) of terms that only earlier user turns of the conversation used.
    earlier_turns_weight: float = 0.25
    #: What the answer says when no sentence of the sources is relevant.
    no_answer: str = NO_ANSWER
    #: What the answer says when the request has no sources at all.
    no_sources: str = NO_SOURCES

    @classmethod
    def parse(cls, raw: Mapping[str, Any]) -> ExtractiveOptions:
        """Options from a TOML table; an unknown key or a wrong value is a :class:`ConfigError`."""
        return cls().merged(raw, allowed=OPTION_KEYS, where="[plugins.options.extractive]", error=ConfigError)

    def for_request(self, raw: Mapping[str, Any]) -> ExtractiveOptions:
        """These options with a request's ``llm_options`` applied; a bad one is an ``LLMRequestError``."""
        if not raw:
            return self
        return self.merged(raw, allowed=REQUEST_KEYS, where="llm_options", error=LLMRequestError)

    def merged(
        self,
        raw: Mapping[str, Any],
        *,
        allowed: tuple[str, ...],
        where: str,
        error: type[ConfigError] | type[LLMRequestError],
    ) -> ExtractiveOptions:
        unknown = sorted(set(raw) - set(allowed))
        if unknown:
            raise error(f"{where} has unknown option(s) {', '.join(unknown)}; known: {', '.join(allowed)}")
        changes: dict[str, Any] = {}
        for key in ("context_window", "max_sentences", "words_per_delta"):
            if key in raw:
                value = raw[key]
                if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                    raise error(f"{where} {key} must be a whole number >= 1, not {value!r}")
                changes[key] = value
        for key in ("min_coverage", "earlier_turns_weight"):
            if key in raw:
                value = raw[key]
                if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
                    raise error(f"{where} {key} must be a number from 0 to 1, not {value!r}")
                changes[key] = float(value)
        for key in ("no_answer", "no_sources"):
            if key in raw:
                value = raw[key]
                if not isinstance(value, str) or not value.strip():
                    raise error(f"{where} {key} must be a non-empty text, not {value!r}")
                changes[key] = value
        return replace(self, **changes)
