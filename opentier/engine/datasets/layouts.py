"""Open a judged collection from its folder, whatever its layout (found from the files present)."""

from __future__ import annotations

from pathlib import Path

from opentier.engine.datasets import beir, cranfield
from opentier.engine.datasets.judged import DatasetError, JudgedCollection


def open_judged(path: Path | str, split: str = beir.DEFAULT_SPLIT) -> JudgedCollection:
    """Read the collection in ``path``: BEIR when it holds ``corpus.jsonl``, Cranfield when it holds
    ``cran.all.1400``. ``split`` picks the BEIR judgments (``qrels/<split>.tsv``); Cranfield has one."""
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise DatasetError(f"{folder} is not a folder")
    if beir.is_beir(folder):
        return beir.load(folder, split)
    if cranfield.is_cranfield(folder):
        return cranfield.load(folder)
    beir_files = f"{beir.CORPUS}, {beir.QUERIES}, {beir.QRELS_DIR}/<split>.tsv"
    cranfield_files = f"{cranfield.DOCUMENTS}, {cranfield.QUERIES}, {cranfield.JUDGMENTS}"
    raise DatasetError(
        f"{folder} is neither a BEIR collection ({beir_files}) "
        f"nor the Cranfield collection ({cranfield_files})"
    )
