"""The committed opentier/generated/ code is exactly what proto/ generates, and imports cleanly."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from opentier.devtools import protogen


@pytest.fixture(scope="module")
def expected() -> dict[str, bytes]:
    """Fresh output of protoc (generated into a temporary folder by ``protogen.generate``)."""
    return protogen.generate()


def test_committed_generated_code_is_up_to_date(expected: dict[str, bytes]) -> None:
    stale = protogen.stale_files(expected)
    assert not stale, (
        "the generated gRPC code is stale; regenerate it with "
        f"`{protogen.REGENERATE_COMMAND}` and commit the result. Stale files:\n  " + "\n  ".join(stale)
    )


def test_every_proto_has_its_modules_and_stubs(expected: dict[str, bytes]) -> None:
    names = {Path(path).name for path in expected}
    for proto in protogen.proto_files():
        for suffix in protogen.GENERATED_SUFFIXES:
            assert proto.stem + suffix in names


def test_imports_point_at_the_generated_package(expected: dict[str, bytes]) -> None:
    for path, content in expected.items():
        text = content.decode()
        assert "from opentier.intelligence.v1 import" not in text, path
        assert "import opentier.intelligence.v1." not in text, path
    grpc_code = expected["opentier/generated/intelligence/v1/plugins_pb2_grpc.py"].decode()
    # method paths name the proto package, which must not be rewritten
    assert "'/opentier.intelligence.v1.PluginService/ListPlugins'" in grpc_code


def test_check_finds_changed_missing_and_extra_files(expected: dict[str, bytes], tmp_path: Path) -> None:
    assert protogen.write(expected, root=tmp_path) == sorted(expected)
    assert protogen.stale_files(expected, root=tmp_path) == []
    folder = tmp_path / "opentier/generated/intelligence/v1"
    (folder / "chat_pb2.py").write_text("# edited by hand\n")
    (folder / "search_pb2.pyi").unlink()
    (folder / "removed_pb2.py").write_text("# from a deleted .proto\n")
    assert protogen.stale_files(expected, root=tmp_path) == [
        "opentier/generated/intelligence/v1/chat_pb2.py",
        "opentier/generated/intelligence/v1/removed_pb2.py",
        "opentier/generated/intelligence/v1/search_pb2.pyi",
    ]
    protogen.write(expected, root=tmp_path)
    assert protogen.stale_files(expected, root=tmp_path) == []
    assert not (folder / "removed_pb2.py").exists()


def test_generated_code_imports_without_warnings() -> None:
    modules = sorted(
        f"{protogen.PYTHON_PACKAGE}.{path.stem}{suffix}"
        for path in protogen.proto_files()
        for suffix in ("_pb2", "_pb2_grpc")
    )
    code = "import importlib\n" + "".join(f"importlib.import_module({m!r})\n" for m in modules)
    done = subprocess.run(
        [sys.executable, "-W", "error", "-c", code], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""


def test_check_command_exits_zero_when_up_to_date() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "opentier.devtools.protogen", "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
