"""YAML loading that remembers where every value came from.

Operators own the files in ``rules/``; when one is wrong, the error must name
the file, the line and the field. PyYAML's node graph carries line marks, so
the document is composed into nodes first and converted to plain Python
values while recording ``path -> line`` (``("budgets", 0, "period") -> 4``).
A validation error's location is then looked up in that map, falling back to
the nearest enclosing value (a missing field points at its parent mapping).
Duplicate keys, which PyYAML would silently collapse, are reported.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

Loc = tuple[str | int, ...]


@dataclass(frozen=True)
class RuleError:
    """One problem in one rules file, rendered as ``file:line: field: message``."""

    file: str
    line: int | None
    field: str
    message: str

    def render(self) -> str:
        where = f"{self.file}:{self.line}" if self.line is not None else self.file
        return f"{where}: {self.field or '(file)'}: {self.message}"


class RulesFileError(Exception):
    """Raised with every problem found in a rules directory."""

    def __init__(self, errors: Sequence[RuleError]) -> None:
        self.errors = list(errors)
        super().__init__("\n".join(e.render() for e in self.errors))


@dataclass
class LocatedDoc:
    """A parsed YAML document and the line (1-based) of each value in it."""

    file: str
    data: Any
    lines: dict[Loc, int] = field(default_factory=dict)

    def line_of(self, loc: Sequence[str | int]) -> int | None:
        path = tuple(loc)
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return self.lines.get(())

    def error(self, loc: Sequence[str | int], message: str) -> RuleError:
        return RuleError(self.file, self.line_of(loc), format_loc(loc), message)


def format_loc(loc: Sequence[str | int]) -> str:
    """``("budgets", 0, "period")`` -> ``budgets[0].period``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def _convert(node: yaml.Node, path: Loc, doc: LocatedDoc, errors: list[RuleError]) -> Any:
    doc.lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = yaml.safe_load(yaml.serialize(key_node)) if not isinstance(key_node, yaml.ScalarNode) else (
                _scalar(key_node)
            )
            if not isinstance(key, (str, int)):
                line = key_node.start_mark.line + 1
                errors.append(RuleError(doc.file, line, format_loc(path), "keys must be strings"))
                continue
            key_s = str(key)
            if key_s in out:
                errors.append(
                    RuleError(doc.file, key_node.start_mark.line + 1, format_loc((*path, key_s)), "duplicate key")
                )
            out[key_s] = _convert(value_node, (*path, key_s), doc, errors)
            doc.lines[(*path, key_s)] = key_node.start_mark.line + 1
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_convert(item, (*path, i), doc, errors) for i, item in enumerate(node.value)]
    return _scalar(node)


def _scalar(node: yaml.Node) -> Any:
    # Resolve the scalar with the safe constructor (ints, floats, bools, null, strings).
    constructor = yaml.SafeLoader("")
    try:
        return constructor.construct_object(node, deep=True)
    finally:
        constructor.dispose()


def load_located(path: Path, display: str | None = None) -> LocatedDoc:
    """Parse one YAML file; raise :class:`RulesFileError` on syntax or key errors."""
    name = display or str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise RulesFileError([RuleError(name, None, "", f"not UTF-8 text ({err.reason})")]) from None
    return load_located_text(text, name)


def load_located_text(text: str, name: str) -> LocatedDoc:
    doc = LocatedDoc(name, None)
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        line = mark.line + 1 if mark is not None else None
        raise RulesFileError([RuleError(name, line, "", f"YAML syntax: {err.problem or err}")]) from None
    except yaml.YAMLError as err:  # e.g. ReaderError: a control character in the text
        raise RulesFileError([RuleError(name, None, "", f"YAML: {err}")]) from None
    if node is None:
        doc.data = {}
        return doc
    errors: list[RuleError] = []
    try:
        doc.data = _convert(node, (), doc, errors)
    except yaml.MarkedYAMLError as err:  # e.g. an unconstructable tag such as a bare "="
        mark = err.problem_mark or err.context_mark
        line = mark.line + 1 if mark is not None else None
        raise RulesFileError([RuleError(name, line, "", f"YAML value: {err.problem or err}")]) from None
    except (ValueError, TypeError, RecursionError) as err:
        raise RulesFileError([RuleError(name, None, "", f"YAML value: {err}")]) from None
    if errors:
        raise RulesFileError(errors)
    return doc
