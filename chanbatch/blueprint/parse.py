"""Turn blueprint YAML into a validated :class:`Blueprint`, reporting every problem at once.

The check runs in three passes over the located YAML (:mod:`chanbatch.blueprint.reader`):
the top level, each stage on its own (:mod:`chanbatch.blueprint.stages`), then the graph:
references that name nothing, cycles, and outputs. Every pass records into one problem log,
and a single BlueprintError lists them all, in line order.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import yaml

from chanbatch.blueprint import checks
from chanbatch.blueprint.checks import DATASET_NAME, STAGE_NAME, Scope, describe
from chanbatch.blueprint.graph import find_cycles
from chanbatch.blueprint.model import Blueprint
from chanbatch.blueprint.problems import ProblemLog
from chanbatch.blueprint.reader import LocatedList, LocatedMap, read_yaml
from chanbatch.blueprint.stages import NAME_RULE, Draft, parse_stages
from chanbatch.errors import InputError, did_you_mean

TOP_LEVEL_KEYS = ("name", "description", "inputs", "stages", "outputs")
_REQUIRED = ("name", "inputs", "stages", "outputs")
# DATASET, DATASET@<id prefix> or DATASET[slice] (DESIGN.md section 3). Only the shape is
# checked here; whether it resolves is the store's business, at plan time.
# a dataset name (the one rule, chanbatch.ids.DATASET_NAME), then @<id prefix> or [slice]
_REF = re.compile(DATASET_NAME.pattern.removesuffix("$") + r"(?:@[0-9a-f]{8,64}|\[[^\[\]]+\])?$")
# Patterns are matched with fullmatch: ``$`` alone also matches before a final newline, and
# "flights\n" must not pass here only to fail as a dataset name after the run has computed.
_DATASET_RULE = "use up to 128 letters, digits, '_', '.' and '-', starting with a letter or digit"


def load_blueprint(path_or_text: str | os.PathLike[str]) -> Blueprint:
    """Load a blueprint from a path (``os.PathLike``, or a one-line str naming a file or
    ending in ``.yaml``/``.yml``) or from YAML text. Problems name the path as given.

    Raises BlueprintError listing every problem, or InputError if the file cannot be read.
    """
    if isinstance(path_or_text, os.PathLike) or _looks_like_path(path_or_text):
        path = os.fspath(path_or_text)
        try:
            _refuse_data_file(path)
            text = Path(path).read_text(encoding="utf-8")
        except FileNotFoundError:
            raise InputError(f"blueprint file not found: {path}") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError(f"cannot read blueprint {path}: {exc}") from exc
        return parse_blueprint(text, source=path)
    return parse_blueprint(path_or_text)


#: Data files users give where a blueprint goes (``chanbatch run flights.csv``): refused by
#: name or by their first bytes, before a large file is read and quoted back.
_DATA_SUFFIXES = {
    ".csv": "CSV",
    ".tsv": "TSV",
    ".parquet": "Parquet",
    ".pq": "Parquet",
    ".arrow": "Arrow",
    ".feather": "Feather",
    ".orc": "ORC",
    ".avro": "Avro",
    ".jsonl": "JSON Lines",
    ".ndjson": "JSON Lines",
    ".xlsx": "Excel",
    ".xls": "Excel",
    ".gz": "compressed",
    ".bz2": "compressed",
    ".zst": "compressed",
    ".xz": "compressed",
    ".zip": "compressed",
}
_DATA_MAGIC = {
    b"PAR1": "Parquet",
    b"ARROW1": "Arrow",
    b"ORC": "ORC",
    b"Obj\x01": "Avro",
    b"\x1f\x8b": "compressed",
    b"BZh": "compressed",
    b"\x28\xb5\x2f\xfd": "compressed",
    b"\xfd7zXZ\x00": "compressed",
    b"PK\x03\x04": "compressed",
}


def _refuse_data_file(path: str) -> None:
    """Raise InputError when ``path`` is a data file (by its suffix or first bytes), not YAML."""
    kind = _DATA_SUFFIXES.get(Path(path).suffix.lower())
    if kind is None:
        with open(path, "rb") as handle:
            head = handle.read(8)
        kind = next((k for magic, k in _DATA_MAGIC.items() if head.startswith(magic)), None)
        if kind is None and b"\x00" in head:
            kind = "binary"
    if kind is None:
        return
    article = "an" if kind[0] in "AEIOU" else "a"
    raise InputError(
        f"{path} is {article} {kind} data file, not a blueprint",
        hint="give a blueprint YAML file (name, inputs, stages, outputs; `chanbatch init` "
        f"writes one); to freeze this file: chanbatch snapshot freeze DATASET {path}",
    )


def _first_line(text: str, limit: int = 40) -> str:
    """How the text of a document that is not a blueprint reads in a message: its first
    line, shortened (a data file given as a blueprint is one long scalar)."""
    lines = text.strip().splitlines() or [""]
    line = lines[0].strip()
    cut = len(line) > limit or len(lines) > 1
    return repr(line[:limit]) + (" ..." if cut else "")


def _no_dotdot(ref: str) -> bool:
    """The store also refuses '..' in a dataset name (snapshot.names, which blueprint does not
    import): check it here, at validate time, rather than after a run has computed."""
    return ".." not in _dataset_of(ref)


def _dataset_of(ref: str) -> str:
    """The dataset a REF names: ``flights`` of ``flights@1a2b3c4d`` or ``flights[2013-01]``."""
    return re.split(r"[@\[]", ref, maxsplit=1)[0]


def _looks_like_path(value: str) -> bool:
    if not isinstance(value, str) or "\n" in value:
        return False
    value = value.strip()
    return value.endswith((".yaml", ".yml")) or os.path.isfile(value)


def parse_blueprint(text: str, *, source: str = "<string>") -> Blueprint:
    """Parse and validate blueprint YAML; ``source`` names it in problems.

    Raises BlueprintError listing every problem found.
    """
    log = ProblemLog(source)
    top = Scope(log)
    document = _read(text, log)
    if not isinstance(document, LocatedMap):
        line = document.line if isinstance(document, LocatedList) else 1
        expected = f"expected a mapping with {', '.join(map(repr, _REQUIRED))}"
        if isinstance(document, str):  # often a data file: quote only the start of it
            expected = f"not a blueprint: {expected}, got the text {_first_line(text)}"
        else:
            expected += f", got {describe(document)}"
        top.problem(line, expected)
        log.raise_if_any()
    assert isinstance(document, LocatedMap)
    misspelled = checks.unknown_keys(top, document, TOP_LEVEL_KEYS)
    for key in _REQUIRED:
        # A misspelt key was just reported with a "did you mean"; once is enough.
        if key not in document and key not in misspelled:
            top.problem(document.line, f"missing {key!r}")
    name = _name(document, top)
    inputs = _inputs(document, top)
    drafts = parse_stages(document, log, inputs)
    outputs = _outputs(document, top, drafts, inputs)
    _check_graph(drafts, inputs, log)
    log.raise_if_any()
    # No problems means every part was built; the asserts only narrow types.
    stages = {n: draft.stage for n, draft in drafts.items() if draft.stage is not None}
    assert name is not None and len(stages) == len(drafts)
    return Blueprint(
        name=name, inputs=inputs, stages=stages, outputs=outputs, source=source, text=text
    )


def _read(text: str, log: ProblemLog) -> Any:
    try:
        document, duplicates = read_yaml(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        message = f"invalid YAML: {exc.problem or exc.context or 'cannot be read'}"
        if exc.problem and exc.context and exc.context_mark:
            # Where the unfinished thing began is often where the mistake is.
            message += f" {exc.context} (started at line {exc.context_mark.line + 1})"
        # PyYAML words indentation mistakes in terms of its parser's states.
        hint = "check the indentation" if "<block" in message else None
        log.add(mark.line + 1 if mark else None, message, hint=hint)
        log.raise_if_any()
    except yaml.reader.ReaderError as exc:
        # Its str() spans two lines and names PyYAML's stream ("<unicode string>"); the problem
        # says the same on one line, with the line of the character.
        line = text.count("\n", 0, exc.position) + 1
        code = exc.character if isinstance(exc.character, int) else ord(exc.character)
        what = f"character U+{code:04X} ({chr(code)!r})"
        log.add(line, f"invalid YAML: {what} is not allowed in YAML")
        log.raise_if_any()
    except yaml.YAMLError as exc:
        log.add(None, "invalid YAML: " + " ".join(str(exc).split()))
        log.raise_if_any()
    for duplicate in duplicates:
        log.add(
            duplicate.line,
            f"key {duplicate.key!r} is given twice",
            hint=f"first at line {duplicate.first_line}",
        )
    return document


def _name(document: LocatedMap, top: Scope) -> str | None:
    if "name" not in document:
        return None
    value = document["name"]
    if isinstance(value, str) and DATASET_NAME.fullmatch(value):
        return value
    top.problem(
        document.value_line("name"),
        f"{describe(value)} is not a valid blueprint name",
        field="name",
        hint=_DATASET_RULE,
    )
    return None


def _inputs(document: LocatedMap, top: Scope) -> dict[str, str]:
    if "inputs" not in document:
        return {}
    expected = "a mapping of input name to dataset REF"
    inputs = checks.mapping(
        top, document["inputs"], document.value_line("inputs"), "inputs", expected
    )
    if inputs is None:
        return {}
    result: dict[str, str] = {}
    for key, ref in inputs.items():
        if not (isinstance(key, str) and STAGE_NAME.fullmatch(key)):
            top.problem(
                inputs.key_line(key),
                f"input name {key!r} is not valid",
                field="inputs",
                hint=NAME_RULE,
            )
            continue
        if not (isinstance(ref, str) and _REF.fullmatch(ref) and _no_dotdot(ref)):
            top.problem(
                inputs.value_line(key),
                f"expected a dataset REF such as 'flights', 'flights@1a2b3c4d' or "
                f"'flights[2013-01]', got {describe(ref)}",
                field=f"inputs.{key}",
            )
        # Kept even when the REF is bad, so that stages reading it are not also reported.
        result[key] = ref if isinstance(ref, str) else ""
    return result


def _outputs(
    document: LocatedMap, top: Scope, drafts: dict[str, Draft], inputs: dict[str, str]
) -> dict[str, str]:
    if "outputs" not in document:
        return {}
    outputs = checks.mapping(
        top,
        document["outputs"],
        document.value_line("outputs"),
        "outputs",
        "a mapping of stage name to the dataset it is frozen as",
    )
    if outputs is None:
        return {}
    result: dict[str, str] = {}
    first_use: dict[str, tuple[str, int]] = {}
    for stage, dataset in outputs.items():
        key_line, value_line = outputs.key_line(stage), outputs.value_line(stage)
        if stage not in drafts and "stages" in document:
            if isinstance(stage, str) and stage in inputs:
                hint = "an input is already a dataset; output a stage"
            else:
                hint = did_you_mean(str(stage), drafts) or f"stages: {', '.join(drafts)}"
            top.problem(key_line, f"{stage!r} is not a stage", field="outputs", hint=hint)
        if not (isinstance(dataset, str) and DATASET_NAME.fullmatch(dataset)):
            top.problem(
                value_line,
                f"{describe(dataset)} is not a valid dataset name",
                field=f"outputs.{stage}",
                hint=_DATASET_RULE,
            )
            continue
        if not _no_dotdot(dataset):
            top.problem(
                value_line,
                f"{describe(dataset)} is not a valid dataset name",
                field=f"outputs.{stage}",
                hint="'..' is not allowed in a dataset name",
            )
            continue
        read_by = [name for name, ref in inputs.items() if _dataset_of(ref) == dataset]
        if read_by:
            top.log.add(
                value_line,
                f"output dataset {dataset!r} is also the blueprint's input {read_by[0]!r}: a "
                f"run would make this stage's rows the new head of its own input",
                stage=str(stage),
                field=f"outputs.{stage}",
                hint=f"write the output to a dataset of its own, such as {str(stage)!r}"
                if str(stage) != dataset
                else f"write the output to a dataset of its own, such as '{dataset}_out'",
            )
            continue
        if dataset in first_use:
            other, other_line = first_use[dataset]
            top.problem(
                value_line,
                f"dataset {dataset!r} is already the output of stage {other!r} (line {other_line})",
                field=f"outputs.{stage}",
            )
            continue
        first_use[dataset] = (str(stage), value_line)
        result[str(stage)] = dataset
    return result


def _check_graph(drafts: dict[str, Draft], inputs: dict[str, str], log: ProblemLog) -> None:
    known = [*inputs, *drafts]
    for name, draft in drafts.items():
        for ref, line, ref_field in draft.refs:
            if ref in inputs or ref in drafts:
                continue
            hint = did_you_mean(ref, known) or (
                f"inputs: {', '.join(inputs) or 'none'}; stages: {', '.join(drafts)}"
            )
            log.add(
                line,
                f"{ref!r} is neither an input nor a stage",
                stage=name,
                field=ref_field,
                hint=hint,
            )
    edges = {
        name: [ref for ref, _, _ in draft.refs if ref in drafts and ref not in inputs]
        for name, draft in drafts.items()
    }
    for cycle in find_cycles(edges):
        first = cycle[0]
        log.add(drafts[first].line, f"stages form a cycle: {' -> '.join(cycle)}", stage=first)
