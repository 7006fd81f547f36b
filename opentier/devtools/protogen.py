"""Generate the Python code for the gRPC contract in ``proto/`` into ``opentier/generated/``.

Run ``python -m opentier.devtools.protogen`` after changing a ``.proto`` file, and commit the
result; ``python -m opentier.devtools.protogen --check`` exits 1 and lists the stale files when the
committed code no longer matches (``tests/test_proto_generated.py`` does the same check). Output is
byte-for-byte deterministic for the pinned ``grpcio-tools`` and ``mypy-protobuf`` versions.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

#: Proto package → where its Python code lives, as import paths.
PROTO_PACKAGE = "opentier.intelligence.v1"
PYTHON_PACKAGE = "opentier.generated.intelligence.v1"

REPO_ROOT = Path(__file__).resolve().parents[2]
PROTO_ROOT = REPO_ROOT / "proto"
PROTO_DIR = PROTO_ROOT / Path(*PROTO_PACKAGE.split("."))
OUTPUT_DIR = REPO_ROOT / Path(*PYTHON_PACKAGE.split("."))
REGENERATE_COMMAND = "python -m opentier.devtools.protogen"

#: Files the generator owns besides the protoc output, with their exact content.
PACKAGE_INITS: dict[str, str] = {
    "opentier/generated/intelligence/__init__.py": (
        '"""Generated code for the opentier.intelligence contract. Do not edit."""\n'
    ),
    "opentier/generated/intelligence/v1/__init__.py": (
        f'"""Generated from proto/opentier/intelligence/v1 by `{REGENERATE_COMMAND}`. Do not edit."""\n'
    ),
}
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py", "_pb2_grpc.pyi")

_PROTO_PACKAGE_RE = re.escape(PROTO_PACKAGE)
_IMPORT_REWRITES: tuple[tuple[re.Pattern[str], str], ...] = (
    # `from opentier.intelligence.v1 import x_pb2` (both .py and .pyi)
    (re.compile(rf"\bfrom {_PROTO_PACKAGE_RE} import\b"), f"from {PYTHON_PACKAGE} import"),
    # module paths `opentier.intelligence.v1.x_pb2` (imports, the builder's module name); the gRPC
    # method paths `/opentier.intelligence.v1.XService/Y` name services, not modules, and stay.
    (
        re.compile(rf"(?<![\w./]){_PROTO_PACKAGE_RE}\.(\w+_pb2(?:_grpc)?)\b"),
        PYTHON_PACKAGE + r".\1",
    ),
    # the file named in grpc's version-mismatch error message
    (
        re.compile(rf"generated code in {re.escape(PROTO_PACKAGE.replace('.', '/'))}/"),
        f"generated code in {PYTHON_PACKAGE.replace('.', '/')}/",
    ),
)


class ProtogenError(Exception):
    """protoc or a plugin failed; the message carries its output."""


def proto_files() -> list[Path]:
    """The contract's ``.proto`` files, sorted so the protoc invocation is stable."""
    return sorted(PROTO_DIR.glob("*.proto"))


def generate() -> dict[str, bytes]:
    """Run protoc with the Python, gRPC and mypy plugins; return ``{repo path: content}``."""
    protos = proto_files()
    if not protos:
        raise ProtogenError(f"no .proto files in {PROTO_DIR}")
    scripts = Path(sysconfig.get_path("scripts"))
    plugins = {name: _find_plugin(name, scripts) for name in ("protoc-gen-mypy", "protoc-gen-mypy_grpc")}
    well_known = resources.files("grpc_tools") / "_proto"
    with tempfile.TemporaryDirectory(prefix="opentier-protogen-") as tmp:
        out = Path(tmp)
        command = [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"--proto_path={PROTO_ROOT}",
            f"--proto_path={well_known}",
            f"--plugin=protoc-gen-mypy={plugins['protoc-gen-mypy']}",
            f"--plugin=protoc-gen-mypy_grpc={plugins['protoc-gen-mypy_grpc']}",
            f"--python_out={out}",
            f"--grpc_python_out={out}",
            f"--mypy_out={out}",
            f"--mypy_grpc_out={out}",
            *(str(path.relative_to(PROTO_ROOT)) for path in protos),
        ]
        result = subprocess.run(command, capture_output=True, text=True, cwd=PROTO_ROOT, check=False)
        if result.returncode != 0:
            output = result.stderr.strip() or result.stdout
            raise ProtogenError(f"protoc failed (exit {result.returncode}):\n{output}")
        produced = out / Path(*PROTO_PACKAGE.split("."))
        files: dict[str, bytes] = {}
        for path in sorted(produced.iterdir()):
            if not path.name.endswith(GENERATED_SUFFIXES):
                raise ProtogenError(f"protoc produced an unexpected file {path.name}")
            target = (OUTPUT_DIR / path.name).relative_to(REPO_ROOT).as_posix()
            files[target] = rewrite_imports(path.read_text(encoding="utf-8")).encode("utf-8")
    files.update({path: text.encode("utf-8") for path, text in PACKAGE_INITS.items()})
    return dict(sorted(files.items()))


def rewrite_imports(source: str) -> str:
    """Point the generated imports at ``opentier.generated`` instead of the proto package path."""
    for pattern, replacement in _IMPORT_REWRITES:
        source = pattern.sub(replacement, source)
    return source


def stale_files(expected: dict[str, bytes], root: Path = REPO_ROOT) -> list[str]:
    """Repo paths under ``root`` that differ from ``expected``, are missing, or are extra."""
    stale = [
        path
        for path, content in expected.items()
        if not (root / path).is_file() or (root / path).read_bytes() != content
    ]
    stale.extend(path for path in _existing_generated(root) if path not in expected)
    return sorted(stale)


def write(expected: dict[str, bytes], root: Path = REPO_ROOT) -> list[str]:
    """Bring the tree under ``root`` in line with ``expected``; return the changed paths."""
    changed = stale_files(expected, root)
    for path in changed:
        target = root / path
        if path in expected:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(expected[path])
        else:
            target.unlink()
    return changed


def _existing_generated(root: Path) -> list[str]:
    folder = root / OUTPUT_DIR.relative_to(REPO_ROOT)
    if not folder.is_dir():
        return []
    return sorted(
        path.relative_to(root).as_posix()
        for path in folder.iterdir()
        if path.is_file() and path.name.endswith(GENERATED_SUFFIXES)
    )


def _find_plugin(name: str, scripts: Path) -> Path:
    candidate = scripts / name
    if candidate.is_file():
        return candidate
    found = shutil.which(name)
    if found is None:
        raise ProtogenError(
            f"{name} not found in {scripts} or on PATH; install the dev extra: pip install -e '.[dev]'"
        )
    return Path(found)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m opentier.devtools.protogen",
        description="Generate opentier/generated/intelligence/v1 from proto/opentier/intelligence/v1.",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="write nothing; exit 1 and list the stale files when the committed code is outdated",
    )
    args = parser.parse_args(argv)
    try:
        expected = generate()
    except ProtogenError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.check:
        stale = stale_files(expected)
        if stale:
            print("stale generated files (regenerate with `" + REGENERATE_COMMAND + "`):")
            for path in stale:
                print(f"  {path}")
            return 1
        print(f"generated code is up to date ({len(expected)} files)")
        return 0
    changed = write(expected)
    for path in changed:
        print(f"wrote {path}" if path in expected else f"removed {path}")
    print(f"{len(changed)} file(s) changed, {len(expected) - len(changed)} up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
