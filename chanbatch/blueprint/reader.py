"""Read blueprint YAML into dicts and lists that remember the line of every key and value.

Validation reports ``file:line`` for each problem, so the loader keeps, for every mapping,
the line of each key and of each value (``node.start_mark.line + 1``), and for every sequence
the line of each item. Scalars stay plain Python values; their line is looked up in their
container.

The loader is PyYAML's safe loader with two changes. Only ``true``/``false`` are booleans
(YAML 1.2): under YAML 1.1 the ``on:`` of a join, or an input named ``no``, would silently
become a boolean. And duplicate keys are recorded instead of the last one silently winning.

Blueprints come from elsewhere, so the loader also refuses, as YAML errors with a line, what a
hostile document could otherwise turn into a crash or a long stall: nesting deeper than
:data:`MAX_DEPTH` (PyYAML composes recursively, so deep nesting is a RecursionError), a value
that a YAML constructor cannot build (``2001-13-45`` as a date, a 5000-digit integer), and
anchors and aliases that repeat the document far beyond its own size (:data:`MAX_EXPANSION`).

Scanning and parsing run in libyaml when PyYAML has it (five times faster on a blueprint of
thousands of stages); composing and constructing stay in Python, so the checks above apply
alike. A document libyaml refuses is read again by the pure-Python parser, so that errors keep
PyYAML's wording and its line. The two parsers differ on a few constructs (tabs, a bare ``!``
tag, a ``?`` key, a comment right after a block scalar's ``|``, byte-order marks and Unicode
line breaks inside the text): a document with any of them (:data:`_PYTHON_ONLY`) is read by
PyYAML alone, so every document reads exactly as it did before libyaml was used.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, ClassVar

import yaml
from yaml.composer import Composer, ComposerError
from yaml.constructor import ConstructorError, SafeConstructor
from yaml.error import Mark
from yaml.events import AliasEvent
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from yaml.resolver import Resolver

try:
    from yaml._yaml import CParser
except ImportError:  # PyYAML built without libyaml
    # the stubs declare CParser unconditionally; None here means "no libyaml"
    CParser = None  # type: ignore[assignment,misc]

from chanbatch.blueprint.nodes import MAX_INT_BITS

_BOOL_TAG = "tag:yaml.org,2002:bool"

#: Deepest nesting of mappings and sequences. A blueprint needs about six levels; PyYAML's
#: composer and constructor recurse once per level, so this keeps them far from the
#: interpreter's recursion limit.
MAX_DEPTH = 64
#: How much larger than its text a document may become when every alias is replaced by what it
#: names, counting one per node plus the characters of each scalar. Anchors may share a block
#: among a few stages; a "billion laughs" document, or one that repeats a 10,000-character
#: expression thousands of times, would make validation take minutes, so it is refused.
MAX_EXPANSION = 4


def expansion_limit(text: str) -> int:
    """The expanded size (see :data:`MAX_EXPANSION`) allowed for a document of ``text``."""
    return 100_000 + MAX_EXPANSION * len(text)


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


class _Located:
    """What both loaders add to PyYAML's: the depth limit, the first alias, bounded values."""

    duplicates: list[DuplicateKey]
    depth: int
    first_alias: Mark | None

    def _start(self) -> None:
        self.duplicates = []
        self.depth = 0
        self.first_alias = None

    def compose_node(self, parent: Node | None, index: Any) -> Node:
        if self.first_alias is None and self.check_event(AliasEvent):  # type: ignore[attr-defined]
            self.first_alias = self.peek_event().start_mark  # type: ignore[attr-defined]
        self.depth += 1
        try:
            if self.depth > MAX_DEPTH:
                raise ComposerError(
                    None,
                    None,
                    f"nested more than {MAX_DEPTH} levels deep",
                    self.peek_event().start_mark,  # type: ignore[attr-defined]
                )
            return super().compose_node(parent, index)  # type: ignore[misc]
        finally:
            self.depth -= 1

    def construct_object(self, node: Node, deep: bool = False) -> Any:
        try:
            data = super().construct_object(node, deep)  # type: ignore[misc]
            if isinstance(data, int) and data.bit_length() > MAX_INT_BITS:
                raise ValueError(f"the number is larger than 2**{MAX_INT_BITS}")
            return data
        except (ValueError, KeyError, TypeError, OverflowError) as exc:
            # The innermost node that fails is reported; ConstructorError passes through.
            kind = node.tag.rpartition(":")[2] or "value"
            value = node.value if isinstance(node, ScalarNode) else ""
            shown = value if len(value) <= 40 else value[:37] + "..."
            if isinstance(exc, KeyError):  # the bool constructor looks the word up
                reason = f"not a valid {kind}"
            else:  # the first clause; Python's advice on set_int_max_str_digits is not the user's
                reason = str(exc).split(";")[0].split(": value has")[0]
            raise ConstructorError(
                None, None, f"cannot read {shown!r} as {kind}: {reason}", node.start_mark
            ) from None


class _Loader(_Located, yaml.SafeLoader):
    """Safe loader with YAML 1.2 booleans and located containers, all in Python."""

    # types-PyYAML declares this an instance variable; in PyYAML it is a class attribute
    yaml_implicit_resolvers: ClassVar[dict[Any, list[tuple[str, re.Pattern[str]]]]] = {  # type: ignore[misc]
        first: [(tag, regexp) for tag, regexp in resolvers if tag != _BOOL_TAG]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._start()


_Loader.add_implicit_resolver(
    _BOOL_TAG, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
_LOADERS: list[type] = [_Loader]
#: What libyaml reads otherwise than PyYAML (found by comparing them on random documents).
_PYTHON_ONLY = re.compile(r"[\t\ufeff\x85\u2028\u2029]|(?:^|[\s\[\]{},])[!?](?=\s|$)|[|>][-+0-9]*#")

if CParser is not None:

    class _FastLoader(_Located, Composer, CParser, SafeConstructor, Resolver):
        """The same loader over libyaml's scanner and parser (Composer before CParser: the
        Python composer, with the checks above, reads libyaml's events)."""

        yaml_implicit_resolvers = _Loader.yaml_implicit_resolvers

        def __init__(self, stream: str) -> None:
            CParser.__init__(self, stream)
            Composer.__init__(self)
            SafeConstructor.__init__(self)
            Resolver.__init__(self)
            self._start()

    _LOADERS.append(_FastLoader)


def _line(node: Node) -> int:
    return node.start_mark.line + 1


def _construct_map(loader: _Loader, node: Node) -> LocatedMap:
    if not isinstance(node, MappingNode):
        raise ConstructorError(None, None, "expected a mapping", node.start_mark)
    own = {id(key) for key, _ in node.value if key.tag != "tag:yaml.org,2002:merge"}
    loader.flatten_mapping(node)  # resolves `<<: *anchor` merge keys, putting their pairs first
    result = LocatedMap(_line(node))
    merged: set[Any] = set()
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
        if key in result and key not in merged:
            loader.duplicates.append(
                DuplicateKey(key=key, line=_line(key_node), first_line=result.key_lines[key])
            )
        # A key of the mapping itself overrides one merged in: that is what `<<` is for.
        if id(key_node) in own:
            merged.discard(key)
        else:
            merged.add(key)
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


for _cls in _LOADERS:
    _cls.add_constructor("tag:yaml.org,2002:map", _construct_map)  # type: ignore[attr-defined]
    _cls.add_constructor("tag:yaml.org,2002:seq", _construct_list)  # type: ignore[attr-defined]


def read_yaml(text: str) -> tuple[Any, list[DuplicateKey]]:
    """Parse one YAML document into located containers, with the duplicate keys it had.

    Raises yaml.YAMLError (a MarkedYAMLError, with a line, for syntax errors).
    """
    if len(_LOADERS) > 1 and not _PYTHON_ONLY.search(text) and not _multiline_flow(text):
        try:
            return _read_with(_LOADERS[-1], text)
        except yaml.YAMLError:
            pass  # read again below, for PyYAML's own error
    return _read_with(_Loader, text)


_FLOW_TOKENS = re.compile(
    r"""'(?:[^']|'')*'|"(?:[^"\\]|\\.)*"|(?:^|(?<=\s))#[^\n]*|[\[\]{}\n]""", re.M
)


def _multiline_flow(text: str) -> bool:
    """Whether a flow collection (``[...]``, ``{...}``) in ``text`` spans lines, outside quotes
    and comments: libyaml then places an empty value on the next line, PyYAML on the key's
    (found by comparing them on random documents). A bracket inside a plain scalar may count
    too; such a document is only read by PyYAML, never read wrong."""
    if "[" not in text and "{" not in text:
        return False
    depth = 0
    for match in _FLOW_TOKENS.finditer(text):
        token = match.group()
        if token in "[{":
            depth += 1
        elif token in "]}":
            depth = max(depth - 1, 0)
        elif token == "\n" and depth:
            return True
    return False


def _read_with(loader_class: type, text: str) -> tuple[Any, list[DuplicateKey]]:
    loader = loader_class(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None, loader.duplicates
        limit = expansion_limit(text)
        if _expanded_size(node, limit, {}) > limit:
            raise ComposerError(
                None,
                None,
                f"anchors and aliases expand this document to more than {limit:,} values and "
                f"characters ({len(text):,} as written)",
                loader.first_alias or node.start_mark,
            )
        return loader.construct_document(node), loader.duplicates
    finally:
        loader.dispose()


def _expanded_size(node: Node, limit: int, sizes: dict[int, int]) -> int:
    """Nodes plus scalar characters of ``node`` with every alias expanded, saturating just above
    ``limit``; linear in the composed (unexpanded) document, whatever the aliases multiply."""
    key = id(node)
    if key in sizes:
        return sizes[key]
    # A node that contains itself is refused by the constructor, with its own message.
    sizes[key] = 0
    if isinstance(node, ScalarNode):
        total = 1 + len(node.value)
    elif isinstance(node, MappingNode):
        total = 1
        for key_node, value_node in node.value:
            total += _expanded_size(key_node, limit, sizes)
            total += _expanded_size(value_node, limit, sizes)
            if total > limit:
                break
    else:
        total = 1
        for item in node.value:
            total += _expanded_size(item, limit, sizes)
            if total > limit:
                break
    sizes[key] = min(total, limit + 1)
    return sizes[key]
