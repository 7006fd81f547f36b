"""How often ``extractive`` answers, on Cranfield, for several ``min_coverage`` values.

Each question with at least two highly relevant abstracts (codes 1-2) is asked twice: with its first
three such abstracts (it should answer), then with three abstracts relevant to another question and not
judged for this one (same field, aeronautics, so many shared words: it should decline). The test
``tests/plugins/test_llm_extractive.py`` checks the default's figures.

    .venv/bin/python plugins/models/extractive/scripts/calibrate.py [/path/to/cranfield]
"""

from __future__ import annotations

import sys
from pathlib import Path

from opentier_llm_extractive import ExtractiveLLM, ExtractiveOptions
from opentier_llm_extractive.options import NO_ANSWER

from opentier.components import ChatMessage, LLMRequest, SourcePassage
from opentier.engine.datasets import cranfield

DEFAULT_FOLDER = Path(__file__).resolve().parents[5] / "shared" / "data" / "cranfield"


def main() -> None:
    folder = Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_FOLDER
    if not cranfield.is_cranfield(folder):
        sys.exit(f"no Cranfield collection at {folder}")
    documents = {document.id: document.text for document in cranfield.documents(folder)}
    questions = {query.id: query.text for query in cranfield.queries(folder)}
    graded = cranfield.qrels(folder)
    high = {q: sorted((d for d, g in docs.items() if g >= 3), key=int) for q, docs in graded.items()}
    asked = sorted((q for q, docs in high.items() if len(docs) >= 2), key=int)
    print(f"{len(asked)} questions; share answered with ...")
    print("min_coverage  relevant abstracts  another question's abstracts")
    for min_coverage in (0.1, 0.15, 0.2, 0.25, 0.3):
        model = ExtractiveLLM(ExtractiveOptions(min_coverage=min_coverage))
        answered = {"relevant": 0, "other": 0}
        for index, question in enumerate(asked):
            other = asked[(index + 37) % len(asked)]
            unrelated = [d for d in high[other] if d not in graded.get(question, {})][:3]
            for kind, ids in (("relevant", high[question][:3]), ("other", unrelated)):
                sources = [SourcePassage(number=n, text=documents[d]) for n, d in enumerate(ids, start=1)]
                request = LLMRequest(messages=[ChatMessage("user", questions[question])], sources=sources)
                answered[kind] += model.answer(request) != NO_ANSWER
        default = " (default)" if min_coverage == ExtractiveOptions().min_coverage else ""
        print(
            f"{min_coverage:<12}  {answered['relevant'] / len(asked):<18.2f}  "
            f"{answered['other'] / len(asked):.2f}{default}"
        )


if __name__ == "__main__":
    main()
