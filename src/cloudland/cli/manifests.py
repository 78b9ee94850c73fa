"""Read manifests from files, directories or stdin, remembering where each came from.

Each document keeps its YAML node tree so an error the server reports for a
field (`spec.env[0].name`) can be shown at its file and line.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from cloudland.errors import BadRequest

try:
    _Loader: type[yaml.SafeLoader] = yaml.CSafeLoader  # type: ignore[assignment]
except AttributeError:  # PyYAML built without libyaml
    _Loader = yaml.SafeLoader

SUFFIXES = (".yaml", ".yml", ".json")


@dataclass
class Manifest:
    doc: Any
    file: str
    index: int  # position of the document in its file, from 0
    node: yaml.Node

    @property
    def line(self) -> int:
        return int(self.node.start_mark.line) + 1

    def where(self, field: str | None = None) -> str:
        """'file.yaml:12' for the field if it can be found, else the document's start."""
        line = self.line_of(field) if field else None
        return f"{self.file}:{line or self.line}"

    def line_of(self, field: str) -> int | None:
        node: yaml.Node | None = self.node
        line = None
        for part in _split_path(field):
            if isinstance(node, yaml.MappingNode) and isinstance(part, str):
                match = next(((k, v) for k, v in node.value if k.value == part), None)
                if match is None:
                    break
                line, node = match[0].start_mark.line + 1, match[1]
            elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
                if part >= len(node.value):
                    break
                node = node.value[part]
                line = node.start_mark.line + 1
            else:
                break
        return line

    def ref(self) -> str:
        doc = mapping(self.doc)
        name = mapping(doc.get("metadata")).get("name", "?")
        return f"{str(doc.get('kind', '?')).lower()}/{name}"


def mapping(value: Any) -> dict[str, Any]:
    """`value` if it is a mapping, else an empty one: for reading untrusted documents."""
    return value if isinstance(value, dict) else {}


def _split_path(field: str) -> list[str | int]:
    parts: list[str | int] = []
    for name, index in re.findall(r"([^.\[\]]+)|\[(\d+)\]", field):
        parts.append(int(index) if index else name)
    return parts


def collect_files(paths: list[str], recursive: bool) -> list[str]:
    files: list[str] = []
    for given in paths:
        if given == "-":
            files.append("-")
            continue
        path = Path(given)
        if path.is_dir():
            pattern = "**/*" if recursive else "*"
            found = sorted(p for p in path.glob(pattern)
                           if p.is_file() and p.suffix in SUFFIXES)
            if not found:
                raise BadRequest(f"{given}: no .yaml, .yml or .json files here",
                                 hint="use -R to include subdirectories" if not recursive else None)
            files.extend(str(p) for p in found)
        elif path.is_file():
            files.append(str(path))
        else:
            raise BadRequest(f"{given}: no such file or directory")
    return files


def load(paths: list[str], *, recursive: bool = False) -> list[Manifest]:
    manifests: list[Manifest] = []
    for file in collect_files(paths, recursive):
        text = sys.stdin.read() if file == "-" else _read(file)
        manifests.extend(parse(text, "<stdin>" if file == "-" else file))
    return manifests


def _read(file: str) -> str:
    try:
        return Path(file).read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise BadRequest(f"{file}: not UTF-8 text") from None
    except OSError as exc:
        raise BadRequest(f"{file}: {exc.strerror}") from None


def parse(text: str, file: str) -> list[Manifest]:
    loader = _Loader(text)
    out: list[Manifest] = []
    try:
        index = 0
        while loader.check_node():
            node = loader.get_node()
            if node is None:
                continue
            _check_duplicate_keys(node, file)
            doc = loader.construct_document(node)
            if doc is not None:
                out.append(Manifest(doc, file, index, node))
            index += 1
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{file}:{mark.line + 1}:{mark.column + 1}" if mark else file
        raise BadRequest(f"{where}: invalid YAML: {exc.problem or exc.context}",
                         hint="check the indentation and quoting around that line") from None
    except yaml.YAMLError as exc:
        raise BadRequest(f"{file}: invalid YAML: {exc}") from None
    finally:
        loader.dispose()
    return out


def _check_duplicate_keys(node: yaml.Node, file: str) -> None:
    """YAML silently keeps the last of two equal keys; a manifest should not."""
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode):
                line = key.start_mark.line + 1
                if key.value in seen:
                    raise BadRequest(
                        f"{file}:{line}: key '{key.value}' appears twice "
                        f"(first at line {seen[key.value]})", hint="remove one of them")
                seen[key.value] = line
            _check_duplicate_keys(value, file)
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            _check_duplicate_keys(item, file)


def stack_name(paths: list[str]) -> str:
    """A label-safe default stack name from the first path given: 'examples/park/' -> 'park'."""
    first = next((p for p in paths if p != "-"), "stdin")
    path = Path(first).resolve()
    base = path.name if path.is_dir() else path.stem
    name = re.sub(r"[^a-z0-9.-]+", "-", base.lower()).strip("-.")[:63].strip("-.")
    return name or "default"
