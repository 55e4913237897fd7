"""Read blueprint YAML into dicts and lists that remember the line of every key and value.

Validation reports ``file:line`` for each problem, so the loader keeps, for every mapping,
the line of each key and of each value (``node.start_mark.line + 1``), and for every sequence
the line of each item. Scalars stay plain Python values; their line is looked up in their
container.

The loader is PyYAML's safe loader with two changes. Only ``true``/``false`` are booleans
(YAML 1.2): under YAML 1.1 the ``on:`` of a join, or an input named ``no``, would silently
become a boolean. And duplicate keys are recorded instead of the last one silently winning.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, ClassVar

import yaml
from yaml.constructor import ConstructorError
from yaml.nodes import MappingNode, Node, SequenceNode

_BOOL_TAG = "tag:yaml.org,2002:bool"


class LocatedMap(dict):
    """A YAML mapping with the 1-based line of itself, of each key and of each value."""

    line: int
    key_lines: dict[Any, int]
    value_lines: dict[Any, int]

    def __init__(self, line: int) -> None:
        super().__init__()
        self.line = line
        self.key_lines = {}
        self.value_lines = {}

    def key_line(self, key: Any) -> int:
        """The line of ``key``, or of the mapping itself if the key is absent."""
        return self.key_lines.get(key, self.line)

    def value_line(self, key: Any) -> int:
        """The line of the value under ``key``, or of the mapping itself if it is absent."""
        return self.value_lines.get(key, self.line)


class LocatedList(list):
    """A YAML sequence with the 1-based line of itself and of each item."""

    line: int
    item_lines: list[int]

    def __init__(self, line: int) -> None:
        super().__init__()
        self.line = line
        self.item_lines = []

    def item_line(self, index: int) -> int:
        """The line of item ``index``."""
        return self.item_lines[index] if index < len(self.item_lines) else self.line


@dataclass(frozen=True, slots=True, kw_only=True)
class DuplicateKey:
    """A key given twice in one mapping; the later value is the one kept."""

    key: Any
    line: int
    first_line: int


class _Loader(yaml.SafeLoader):
    """Safe loader with YAML 1.2 booleans and located containers."""

    yaml_implicit_resolvers: ClassVar[dict[Any, list[tuple[str, re.Pattern[str]]]]] = {
        first: [(tag, regexp) for tag, regexp in resolvers if tag != _BOOL_TAG]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.duplicates: list[DuplicateKey] = []


_Loader.add_implicit_resolver(
    _BOOL_TAG, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def _line(node: Node) -> int:
    return node.start_mark.line + 1


def _construct_map(loader: _Loader, node: Node) -> LocatedMap:
    if not isinstance(node, MappingNode):
        raise ConstructorError(None, None, "expected a mapping", node.start_mark)
    loader.flatten_mapping(node)  # resolves `<<: *anchor` merge keys
    result = LocatedMap(_line(node))
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        try:
            hash(key)
        except TypeError:
            raise ConstructorError(
                "while reading a mapping",
                node.start_mark,
                "a key must be a plain value, not a list or mapping",
                key_node.start_mark,
            ) from None
        if key in result:
            loader.duplicates.append(
                DuplicateKey(key=key, line=_line(key_node), first_line=result.key_lines[key])
            )
        result[key] = loader.construct_object(value_node, deep=True)
        result.key_lines[key] = _line(key_node)
        result.value_lines[key] = _line(value_node)
    return result


def _construct_list(loader: _Loader, node: Node) -> LocatedList:
    if not isinstance(node, SequenceNode):
        raise ConstructorError(None, None, "expected a sequence", node.start_mark)
    result = LocatedList(_line(node))
    for item in node.value:
        result.append(loader.construct_object(item, deep=True))
        result.item_lines.append(_line(item))
    return result


_Loader.add_constructor("tag:yaml.org,2002:map", _construct_map)
_Loader.add_constructor("tag:yaml.org,2002:seq", _construct_list)


def read_yaml(text: str) -> tuple[Any, list[DuplicateKey]]:
    """Parse one YAML document into located containers, with the duplicate keys it had.

    Raises yaml.YAMLError (a MarkedYAMLError, with a line, for syntax errors).
    """
    loader = _Loader(text)
    try:
        return loader.get_single_data(), loader.duplicates
    finally:
        loader.dispose()
