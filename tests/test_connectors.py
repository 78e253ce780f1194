"""The filesystem connector: selection, limits, skipped files, determinism, schema."""

from __future__ import annotations

import importlib
import os
import shutil
import tomllib
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from executor_support.schemas import assert_valid

from cas.connectors import FILE_CONTENT, FilesystemConnector, glob_pattern, resolve_properties
from cas.digest import Digest, canonical_json
from cas.errors import InvalidInputError
from cas.plugins import Connector

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples" / "data"


def make_tree(root: Path, tree: dict[str, bytes | str]) -> Path:
    """Write `tree` (relative path → content) under `root`."""
    for relative, data in tree.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(data, str):
            path.write_text(data, encoding="utf-8")
        else:
            path.write_bytes(data)
    return root


def extract(root: Path | str, **properties: Any) -> dict[str, Any]:
    """Run the connector over `root` with `properties`."""
    return FilesystemConnector().extract({"path": str(root), **properties})


def paths(content: dict[str, Any]) -> list[str]:
    """Relative paths of the files read."""
    return [entry["path"] for entry in content["files"]]


TREE: dict[str, bytes | str] = {
    "b.txt": "bee\n",
    "a.txt": "ay\n",
    "sub/c.py": "print('c')\n",
    "sub/deep/d.csv": "x,y\n1,2\n",
    "image.bin": b"\x89PNG\x00\x01",
}


@pytest.mark.parametrize(
    ("glob", "path", "expected"),
    [
        ("**/*", "a.txt", True),
        ("**/*", "sub/deep/d.csv", True),
        ("**/*.bin", "image.bin", True),
        ("**/*.bin", "x/y/image.bin", True),
        ("*.txt", "a.txt", True),
        ("*.txt", "sub/a.txt", False),
        ("sub/**", "sub/deep/d.csv", True),
        ("sub/*", "sub/deep/d.csv", False),
        ("data/?.csv", "data/a.csv", True),
        ("data/?.csv", "data/ab.csv", False),
        ("[!a]*.txt", "b.txt", True),
        ("[!a]*.txt", "a.txt", False),
        ("[ab].txt", "b.txt", True),
        ("a+b.txt", "a+b.txt", True),
        ("a+b.txt", "aab.txt", False),
    ],
)
def test_glob_pattern(glob: str, path: str, expected: bool) -> None:
    assert bool(glob_pattern(glob).fullmatch(path)) is expected


def test_files_are_sorted_relative_and_hashed(tmp_path: Path) -> None:
    content = extract(make_tree(tmp_path, TREE))
    assert content["root"] == str(tmp_path)
    assert paths(content) == ["a.txt", "b.txt", "sub/c.py", "sub/deep/d.csv"]
    first = content["files"][0]
    assert first == {
        "path": "a.txt",
        "size": 3,
        "digest": Digest.of(b"ay\n").hex,
        "content": "ay\n",
    }
    assert content["skipped"] == [{"path": "image.bin", "reason": "binary (contains NUL bytes)"}]
    assert_valid("file_content", content)


def test_include_and_exclude(tmp_path: Path) -> None:
    make_tree(tmp_path, TREE)
    assert paths(extract(tmp_path, include=["**/*.txt"])) == ["a.txt", "b.txt"]
    assert paths(extract(tmp_path, include=["sub/**"], exclude=["**/*.csv"])) == ["sub/c.py"]
    excluded = extract(tmp_path, exclude=["**/*.bin", "sub/**"])
    assert paths(excluded) == ["a.txt", "b.txt"]
    assert excluded["skipped"] == []  # excluded files are not even listed as skipped


def test_files_over_the_size_limit_are_skipped_with_the_reason(tmp_path: Path) -> None:
    make_tree(tmp_path, {"small.txt": "x" * 10, "big.txt": "x" * 11})
    content = extract(tmp_path, max_file_size=10)
    assert paths(content) == ["small.txt"]
    assert content["skipped"] == [
        {"path": "big.txt", "reason": "larger than max_file_size (11 > 10 bytes)"}
    ]


def test_default_size_limit_is_one_mebibyte(tmp_path: Path) -> None:
    make_tree(tmp_path, {"edge.txt": "x" * 1024 * 1024, "over.txt": "x" * (1024 * 1024 + 1)})
    content = extract(tmp_path)
    assert paths(content) == ["edge.txt"]
    assert [entry["path"] for entry in content["skipped"]] == ["over.txt"]


def test_undecodable_files_are_skipped_not_crashed_on(tmp_path: Path) -> None:
    make_tree(tmp_path, {"latin.txt": "Müller\n".encode("latin-1"), "ok.txt": "fine\n"})
    content = extract(tmp_path)
    assert paths(content) == ["ok.txt"]
    assert content["skipped"] == [
        {"path": "latin.txt", "reason": "not decodable as utf-8 (byte 1)"}
    ]
    assert extract(tmp_path, encoding="latin-1")["files"][0]["content"] == "Müller\n"


def test_a_missing_path_is_an_invalid_input_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(InvalidInputError) as caught:
        extract(missing)
    assert str(caught.value) == f"path not found: {missing}"
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("properties", "message"),
    [
        ({}, "'path' is a required property"),
        ({"path": "x", "colour": "red"}, "'colour' was unexpected"),
        ({"path": "x", "max_file_size": -1}, "at max_file_size"),
        ({"path": "x", "include": "*.txt"}, "at include"),
    ],
)
def test_bad_properties_are_invalid_input(properties: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        FilesystemConnector().extract(properties)


def test_an_unknown_encoding_is_invalid_input(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="unknown encoding 'klingon'"):
        extract(tmp_path, encoding="klingon")


def test_a_single_file_path_reads_that_file(tmp_path: Path) -> None:
    make_tree(tmp_path, TREE)
    content = extract(tmp_path / "sub" / "c.py")
    assert paths(content) == ["c.py"]


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="needs symbolic links")
def test_symbolic_links_are_listed_as_skipped_not_followed(tmp_path: Path) -> None:
    outside = make_tree(tmp_path / "outside", {"secret.txt": "s\n"})
    root = make_tree(tmp_path / "root", {"a.txt": "a\n"})
    (root / "link.txt").symlink_to(outside / "secret.txt")
    (root / "linked_dir").symlink_to(outside, target_is_directory=True)
    content = extract(root)
    assert paths(content) == ["a.txt"]
    skipped = {entry["path"]: entry["reason"] for entry in content["skipped"]}
    assert skipped == {"link.txt": "symbolic link", "linked_dir": "symbolic link"}


def test_output_does_not_depend_on_where_the_folder_lives(tmp_path: Path) -> None:
    first = make_tree(tmp_path / "one", TREE)
    second = tmp_path / "elsewhere" / "two"
    shutil.copytree(first, second)
    os.utime(second / "a.txt", (0, 0))  # times are not part of the content
    one, two = extract(first), extract(second)
    assert canonical_json(one["files"]) == canonical_json(two["files"])
    assert canonical_json(one["skipped"]) == canonical_json(two["skipped"])


def test_a_relative_root_is_reported_as_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    content = extract("examples/data", exclude=["**/*.bin"])
    assert content["root"] == "examples/data"
    assert all(not entry["path"].startswith("/") for entry in content["files"])


def test_examples_extract_is_deterministic() -> None:
    first = extract(EXAMPLES, exclude=["**/*.bin"])
    second = extract(EXAMPLES, exclude=["**/*.bin"])
    assert canonical_json(first) == canonical_json(second)
    assert len(first["files"]) >= 30
    assert first["skipped"] == [
        {"path": "data/legacy_latin1.txt", "reason": "not decodable as utf-8 (byte 8)"}
    ]
    assert_valid("file_content", first)


def test_examples_stay_small() -> None:
    sizes = [path.stat().st_size for path in EXAMPLES.rglob("*") if path.is_file()]
    assert 24 <= len(sizes) <= 60
    assert sum(sizes) < 200 * 1024


def test_resolve_properties_fills_defaults_without_sharing_them() -> None:
    schema = FilesystemConnector.properties_schema
    resolved = resolve_properties("filesystem", schema, {"path": "x"})
    assert resolved == {
        "path": "x",
        "include": ["**/*"],
        "exclude": [],
        "max_file_size": 1024 * 1024,
        "encoding": "utf-8",
    }
    resolved["include"].append("more")
    assert schema["properties"]["include"]["default"] == ["**/*"]


def test_plugin_declarations() -> None:
    plugin = FilesystemConnector
    assert issubclass(plugin, Connector)
    assert (plugin.type, plugin.output_schema) == ("filesystem", FILE_CONTENT)
    jsonschema.Draft202012Validator.check_schema(plugin.properties_schema)
    for name, spec in plugin.properties_schema["properties"].items():
        assert "description" in spec
        assert name in plugin.properties_schema["required"] or "default" in spec


def test_entry_point_in_pyproject_names_the_class() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    target = project["project"]["entry-points"]["cas.connectors"]["filesystem"]
    module, _, name = target.partition(":")
    assert getattr(importlib.import_module(module), name) is FilesystemConnector
