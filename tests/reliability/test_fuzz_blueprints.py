"""Issue 7, item 8: fuzz the blueprint parser and the expression language.

Every document, however hostile, ends in one of two ways: a :class:`BlueprintError` whose every
problem has a message, or a valid blueprint. Never another exception, never a hang (each parse
runs under a time limit), never code execution: YAML tags that would create a marker file or set
an environment variable are fed in, and afterwards the file does not exist and the variable is
not set, while the same payloads do both through PyYAML's unsafe loader (so the check can see
them). A valid blueprint must also be valid for the store: its output names pass the store's
dataset-name check and its input REFs parse, so nothing that validates fails only after a run
has computed.

The documents come from Hypothesis (random YAML values, random YAML-ish text, mutations of the
shipped blueprints, random blueprint-shaped documents with generated expressions), and from an
explicit corpus of deep nesting, huge numbers, unicode, anchors and aliases, and tags, which also
goes through ``chanbatch validate``. A "billion laughs" document is refused in a fresh process
within tight time and memory bounds.

How many cases ran is printed and kept in pytest's cache (see ``hostilekit.record_counts``);
``--runslow`` runs many more examples.
"""

from __future__ import annotations

import ctypes
import json
import subprocess
import sys
import textwrap
import uuid
from collections import Counter
from pathlib import Path

import pytest
import yaml
from hostilekit import (
    REPO,
    assert_clean_error,
    case,
    expressions,
    record_counts,
    run_many,
    runslow,
    time_limit,
)
from hypothesis import HealthCheck, currently_in_test_context, event, given, settings
from hypothesis import strategies as st

from chanbatch import Blueprint
from chanbatch.blueprint import BlueprintError, parse_blueprint
from chanbatch.blueprint.reader import MAX_DEPTH
from chanbatch.errors import InputError
from chanbatch.hashing import digest_json
from chanbatch.snapshot.names import check_dataset_name, parse_ref

EXAMPLES = sorted((REPO / "blueprints").glob("*.yaml")) + sorted(
    (REPO / "tests" / "blueprint" / "good").glob("*.yaml")
)
EXAMPLE_TEXTS = [path.read_text(encoding="utf-8") for path in EXAMPLES]

#: Unique per test session, so that a leftover from another run cannot mask or fake a result.
TOKEN = uuid.uuid4().hex[:12]
ENV_VAR = f"CHANBATCH_PWNED_{TOKEN}"


def payload_tags(marker: Path) -> list[str]:
    """YAML values that, under a loader that builds Python objects, run code: each would create
    ``marker`` or set :data:`ENV_VAR`; and tags that only build unusual values."""
    m = str(marker)
    return [
        f"!!python/object/apply:os.system ['touch {m}']",
        f"!!python/object/apply:os.putenv ['{ENV_VAR}', '1']",
        f"!!python/object/apply:subprocess.call [['touch', '{m}']]",
        f"!!python/object/apply:builtins.exec [\"open('{m}', 'w').close()\"]",
        f"!!python/object/apply:builtins.eval [\"open('{m}', 'w').close()\"]",
        f"!!python/object/new:os.system ['touch {m}']",
        f"!<tag:yaml.org,2002:python/object/apply:os.system> ['touch {m}']",
        f"!python/object/apply:os.system ['touch {m}']",
        "!!python/object:os.system {}",
        "!!python/object/new:type ['X', [], {}]",
        "!!python/name:os.system",
        "!!python/module:os",
        "!!python/tuple [1, 2]",
        "!!python/bytes aGVsbG8=",
        "!!python/complex 1+2j",
        "!!binary aGVsbG8=",
        "!!set {a, b}",
        "!!omap [{a: 1}]",
        "!!pairs [{a: 1}]",
        "!!timestamp 2001-13-45",
        "!!int x",
        "!!float x",
        "!!bool x",
        "!!null x",
        "!!str [1]",
        "!!map [1]",
        "!!seq {a: 1}",
        "!custom x",
        "!!merge x",
        "!!value x",
    ]


#: Values that stress the parser wherever a scalar goes.
HOSTILE_SCALARS = [
    "9" * 5000,  # more digits than Python converts to an int
    "-" + "9" * 4301,
    "0x" + "f" * 5000,
    "1e99999",
    "-.inf",
    ".nan",
    "1:2:3:" + "5" * 5000,  # a YAML 1.1 base-60 integer
    "2001-13-45",  # a date that is not one
    "2001-01-01 25:61:61",
    "~",
    '""',
    "'\U0001f600 emoji'",
    "'а'",  # Cyrillic a
    "'ｆｌｉｇｈｔｓ'",  # fullwidth
    "'a∕b'",  # U+2215 division slash
    "'a／b'",  # fullwidth solidus
    "'../../etc/passwd'",
    "/etc/passwd",
    '"a\\0b"',  # a NUL inside a double-quoted scalar
    '"\\x1b]0;title\\x07"',
    '"\\u202e"',
    '"\\ud800"',  # a lone surrogate
    "'" + "x" * 20000 + "'",
    "*undefined_alias",
    "&anchor value",
    "[" * 200 + "]" * 200,
    "{a: " * 100 + "1" + "}" * 100,
    "'x.__class__'",
    '\'__import__("os").system("id")\'',
    "\"'%s' % x\"",
    "'count(*)'",
    "os:system",
    "'../x:f'",
]


# -- the property -------------------------------------------------------------------------------


def outcome(text: str, counts: Counter[str]) -> str:
    """Parse ``text``; return "valid" or "error", failing the test on anything else."""
    counts["cases"] += 1
    with time_limit(10, "parsing a blueprint"):
        try:
            blueprint = parse_blueprint(text, source="fuzz.yaml")
        except BlueprintError as error:
            assert error.problems, "a BlueprintError without problems"
            assert str(error).strip()
            for problem in error.problems:
                assert problem.message.strip(), problem
                assert problem.file == "fuzz.yaml"
                assert problem.line is None or problem.line >= 1
            counts["blueprint_error"] += 1
            if currently_in_test_context():
                event("BlueprintError")
            return "error"
    # Valid for the parser must mean valid for the store and for the cache keys.
    for dataset in blueprint.outputs.values():
        check_dataset_name(dataset)
    for ref in blueprint.inputs.values():
        parse_ref(ref)
    for stage in blueprint.stages.values():
        assert len(digest_json(stage.canonical())) == 64
    counts["valid"] += 1
    if currently_in_test_context():
        event("valid")
    return "valid"


def fuzz(
    request: pytest.FixtureRequest,
    strategy: st.SearchStrategy[str],
    ci_examples: int,
    slow_examples: int,
) -> Counter[str]:
    """Run :func:`outcome` on ``strategy``'s documents; assert they all ran; report the counts."""
    counts: Counter[str] = Counter()
    examples = slow_examples if runslow(request) else ci_examples

    @settings(
        max_examples=examples,
        deadline=None,
        derandomize=not runslow(request),
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(strategy)
    def check(text: str) -> None:
        outcome(text, counts)

    check()
    assert counts["cases"] >= examples, counts
    record_counts(request, counts)
    return counts


# -- strategies ---------------------------------------------------------------------------------

BLUEPRINT_KEYS = [
    "name",
    "description",
    "inputs",
    "stages",
    "outputs",
    "from",
    "per_slice",
    "filter",
    "derive",
    "select",
    "rename",
    "join",
    "group_by",
    "aggregate",
    "sort",
    "limit",
    "union",
    "map",
    "function",
    "version",
    "right",
    "on",
    "how",
    "suffixes",
]
_leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**40), 10**40),
    st.floats(),
    st.text(max_size=12),
    st.sampled_from(["flights", "x > 1", "count()", "mean(x)", "a:b", "carrier_delays"]),
)
yaml_values = st.recursive(
    _leaves,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(
            st.one_of(st.sampled_from(BLUEPRINT_KEYS), st.text(max_size=8), st.integers()),
            children,
            max_size=5,
        ),
    ),
    max_leaves=30,
)


@st.composite
def dumped_values(draw: st.DrawFn) -> str:
    """A random YAML value, often shaped like a blueprint, written by PyYAML."""
    if draw(st.booleans()):
        value = draw(
            st.fixed_dictionaries(
                {key: yaml_values for key in ("name", "inputs", "stages", "outputs")},
                optional={"description": yaml_values},
            )
        )
    else:
        value = draw(yaml_values)
    style = draw(st.sampled_from([None, True, False]))
    return yaml.safe_dump(
        value, allow_unicode=draw(st.booleans()), default_flow_style=style, sort_keys=False
    )


YAML_ALPHABET = [
    *list("abcxyz019_-.:,[]{}#&*!|>'\"%@`?\\ \t\n"),
    "name:",
    "stages:",
    "&a ",
    "*a",
    "<<: *a",
    "!!python/name:os.system",
    "---",
    "...",
    "%YAML 1.2",
    "%TAG ! tag:yaml.org,2002:python/",
    "é",
    "\u202e",
    "\ufeff",
    "\x85",
    "\u2028",
    "\x00",
    "\x1b",
]
yaml_text = st.lists(st.sampled_from(YAML_ALPHABET), max_size=80).map("".join)


@st.composite
def mutated_examples(draw: st.DrawFn, marker: Path) -> str:
    """A shipped blueprint with a few line-level, value-level and character-level mutations."""
    lines = draw(st.sampled_from(EXAMPLE_TEXTS)).splitlines()
    values = [*HOSTILE_SCALARS, *payload_tags(marker)]
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(
            st.sampled_from(
                ["delete", "duplicate", "swap", "value", "insert", "indent", "char", "alias"]
            )
        )
        i = draw(st.integers(0, max(len(lines) - 1, 0)))
        j = draw(st.integers(0, max(len(lines) - 1, 0)))
        if not lines:
            lines = ["name: x"]
        if kind == "delete" and len(lines) > 1:
            del lines[i]
        elif kind == "duplicate":
            lines.insert(i, lines[i])
        elif kind == "swap":
            lines[i], lines[j] = lines[j], lines[i]
        elif kind == "value" and ":" in lines[i]:
            head = lines[i].split(":", 1)[0]
            lines[i] = f"{head}: {draw(st.sampled_from(values))}"
        elif kind == "insert":
            indent = " " * draw(st.sampled_from([0, 2, 4, 6]))
            key = draw(st.sampled_from(BLUEPRINT_KEYS))
            lines.insert(i, f"{indent}{key}: {draw(st.sampled_from(values))}")
        elif kind == "indent":
            lines[i] = " " * draw(st.integers(-2, 3)) + lines[i].lstrip(
                " " if draw(st.booleans()) else ""
            )
        elif kind == "char":
            line = lines[i]
            at = draw(st.integers(0, len(line)))
            char = draw(st.sampled_from(YAML_ALPHABET))
            lines[i] = line[:at] + char + line[at + draw(st.integers(0, 1)) :]
        elif kind == "alias" and ":" in lines[i] and ":" in lines[j]:
            head_i, value_i = lines[i].split(":", 1)
            head_j = lines[j].split(":", 1)[0]
            lines[i] = f"{head_i}: &a{value_i}"
            lines[j] = f"{head_j}: *a"
    return "\n".join(lines) + "\n"


NAMES = st.sampled_from(
    ["flights", "a", "x1", "_y", "late", "carrier_delays", "a..b", "a/b", "../x", "a\nb", "а", ""]
)
COLUMNS = st.sampled_from(["a", "b", "dep_delay", "carrier", "x1"])
HOSTILE_EXPRESSIONS = st.sampled_from(
    [
        "x.__class__",
        "__import__('os')",
        "eval('1')",
        "'%s' % x",
        "lower(x) * 3",
        "(" * 300 + "x" + ")" * 300,
        "x" * 20000,
        "f'{x}'",
        "lambda: 1",
        "[y for y in x]",
        "x[0]",
        "a\0b",
    ]
)
EXPRESSION_TEXT = st.one_of(expressions.map(lambda e: e.render()), HOSTILE_EXPRESSIONS)
AGGREGATE_TEXT = st.one_of(
    st.just("count()"),
    st.tuples(
        st.sampled_from(
            ["count", "sum", "mean", "min", "max", "var", "std", "count_distinct", "avg"]
        ),
        EXPRESSION_TEXT,
    ).map(lambda t: f"{t[0]}({t[1]})"),
)
OPERATIONS: dict[str, st.SearchStrategy[object]] = {
    "filter": EXPRESSION_TEXT,
    "derive": st.dictionaries(COLUMNS, EXPRESSION_TEXT, min_size=1, max_size=3),
    "select": st.lists(COLUMNS, min_size=1, max_size=3),
    "rename": st.dictionaries(COLUMNS, COLUMNS, min_size=1, max_size=2),
    "aggregate": st.dictionaries(COLUMNS, AGGREGATE_TEXT, min_size=1, max_size=3),
    "sort": st.lists(st.one_of(COLUMNS, COLUMNS.map(lambda c: "-" + c)), min_size=1, max_size=2),
    "limit": st.one_of(st.integers(-2, 10**30), st.floats()),
    "union": st.lists(NAMES, min_size=1, max_size=2),
    "join": st.fixed_dictionaries(
        {"right": NAMES, "on": COLUMNS},
        optional={"how": st.sampled_from(["left", "inner", "outer", "right", "cross"])},
    ),
    "map": st.fixed_dictionaries(
        {
            "function": st.sampled_from(
                ["pkg.mod:fn", "os:system", "../x:f", "a:b\n", "оs:system", "a.b:c.d"]
            ),
            "version": st.one_of(st.integers(0, 3), st.text(max_size=3)),
        }
    ),
}


@st.composite
def blueprint_documents(draw: st.DrawFn) -> str:
    """Blueprint-shaped documents: real operations, generated and hostile expressions."""
    inputs = draw(st.dictionaries(NAMES, NAMES, min_size=1, max_size=2))
    stages: dict[str, object] = {}
    sources = list(inputs)
    for index in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(sorted(OPERATIONS)))
        stage: dict[str, object] = {"from": draw(st.sampled_from(sources)), kind: None}
        stage[kind] = draw(OPERATIONS[kind])
        if kind == "aggregate" and draw(st.booleans()):
            stage["group_by"] = draw(st.lists(COLUMNS, min_size=1, max_size=2, unique=True))
        if draw(st.integers(0, 4)) == 0:
            stage["per_slice"] = draw(st.sampled_from([True, "yes", 1]))
        name = f"s{index}"
        stages[name] = stage
        sources.append(name)
    output = draw(NAMES)
    if output in inputs.values():
        # an output named like an input's dataset is refused (it would overwrite its own
        # input): renamed, without another draw, so the generator reaches as many valid ones
        output += "_out"
    outputs = {draw(st.sampled_from(list(stages))): output}
    document = {"name": draw(NAMES), "inputs": inputs, "stages": stages, "outputs": outputs}
    return yaml.safe_dump(document, allow_unicode=True, sort_keys=False, width=10**6)


# -- the fuzz tests -------------------------------------------------------------------------------


def test_fuzz_random_yaml_values(request: pytest.FixtureRequest) -> None:
    fuzz(request, dumped_values(), ci_examples=150, slow_examples=3000)


def test_fuzz_random_yaml_text(request: pytest.FixtureRequest) -> None:
    fuzz(request, yaml_text, ci_examples=150, slow_examples=3000)


def test_fuzz_mutated_examples(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    counts = fuzz(request, mutated_examples(marker), ci_examples=300, slow_examples=5000)
    assert not marker.exists(), "a YAML tag ran code"
    assert not env_is_set(ENV_VAR), "a YAML tag ran code"
    assert counts["valid"] and counts["blueprint_error"], counts  # both outcomes were reached


def test_fuzz_blueprint_documents(request: pytest.FixtureRequest) -> None:
    counts = fuzz(request, blueprint_documents(), ci_examples=200, slow_examples=4000)
    # The generator reaches valid blueprints too, so the store-consistency checks ran.
    assert counts["valid"] >= 10 and counts["blueprint_error"] >= 10, counts


def test_shipped_examples_are_valid() -> None:
    """The mutation fuzz starts from valid documents (else it would only test error paths)."""
    counts: Counter[str] = Counter()
    assert len(EXAMPLE_TEXTS) >= 5
    assert all(outcome(text, counts) == "valid" for text in EXAMPLE_TEXTS)


# -- code execution ------------------------------------------------------------------------------


def env_is_set(name: str) -> bool:
    """Whether the process environment has ``name``: the C library's view, which is what
    ``os.putenv`` changes (``os.environ`` would not see it)."""
    libc = ctypes.CDLL(None)
    libc.getenv.restype = ctypes.c_char_p
    return libc.getenv(name.encode()) is not None


def _placements(value: str) -> list[str]:
    """A blueprint with ``value`` at each place a user's YAML can put something."""
    base = {
        "name": "name: x\n",
        "inputs": "inputs: {a: a}\n",
        "stages": "stages:\n  s:\n    from: a\n    filter: x > 1\n",
        "outputs": "outputs: {s: out}\n",
    }
    docs = [
        f"{value}\n",
        f"name: {value}\n" + "".join(v for k, v in base.items() if k != "name"),
        "".join(base.values()).replace("filter: x > 1", f"filter: {value}"),
        "".join(base.values()).replace("    from: a\n", f"    from: a\n    description: {value}\n"),
        "".join(base.values()).replace("filter: x > 1", f"map: {{function: {value}, version: 1}}"),
        "".join(base.values()).replace("inputs: {a: a}", f"inputs: {{a: a, ? {value} : b}}"),
        "".join(base.values()).replace("outputs: {s: out}", f"outputs:\n  - {value}"),
        "%TAG !py! tag:yaml.org,2002:python/\n---\n"
        + "".join(base.values()).replace("name: x", f"name: {value.replace('!!python/', '!py!')}"),
    ]
    return docs


def test_tags_never_run_code(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    counts: Counter[str] = Counter()
    for value in payload_tags(marker):
        for doc in _placements(value):
            outcome(doc, counts)
            assert not marker.exists(), f"code ran for {doc!r}"
            assert not env_is_set(ENV_VAR), f"code ran for {doc!r}"
    # Every python/ tag is refused by name (the valid ones are the harmless standard tags).
    refused = Counter()
    for value in payload_tags(marker):
        if "python/" not in value:
            continue
        with pytest.raises(BlueprintError, match="could not determine a constructor"):
            parse_blueprint(_placements(value)[1])
        refused["python_tags"] += 1
    record_counts(request, {**counts, **refused})
    assert counts["cases"] == len(payload_tags(marker)) * len(_placements("x"))


def test_the_payloads_are_real(tmp_path: Path) -> None:
    """The control for the test above: PyYAML's unsafe loader runs the same payloads, and the
    checks see it, in a child process (so that its environment is its own)."""
    marker = tmp_path / "marker"
    tags = payload_tags(marker)
    code = textwrap.dedent(
        f"""
        import ctypes, yaml
        yaml.unsafe_load({tags[0]!r})
        yaml.unsafe_load({tags[1]!r})
        libc = ctypes.CDLL(None)
        libc.getenv.restype = ctypes.c_char_p
        print(libc.getenv({ENV_VAR!r}.encode()) is not None)
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == "True"
    assert marker.exists()
    assert not env_is_set(ENV_VAR)  # the child's environment was its own


# -- deep nesting, huge numbers, unicode, anchors: an explicit corpus ---------------------------


def _deep_cases() -> dict[str, str]:
    stages = "inputs: {a: a}\nstages:\n  s: {from: a, limit: 1}\noutputs: {s: out}\n"
    block = "".join("  " * i + f"k{i}:\n" for i in range(2000)) + "  " * 2000 + "v\n"
    return {
        "flow-lists-10k": "name: " + "[" * 10_000 + "]" * 10_000 + "\n",
        "flow-maps-10k": "name: " + "{a: " * 10_000 + "1" + "}" * 10_000 + "\n",
        "block-maps-2k": block,
        "block-lists-1k": "".join("  " * i + "-\n" for i in range(1000)) + "  " * 1000 + "- x\n",
        "deep-in-stage": "name: x\n"
        + stages.replace("limit: 1", "limit: " + "[" * 500 + "]" * 500),
        "just-deep-enough": "name: "
        + "[" * (MAX_DEPTH - 1)
        + "]" * (MAX_DEPTH - 1)
        + "\n"
        + stages,
    }


def _number_cases() -> dict[str, str]:
    body = "inputs: {a: a}\nstages:\n  s: {from: a, limit: %s}\noutputs: {s: out}\n"
    out = {}
    for label, number in {
        "int-5000-digits": "9" * 5000,
        "int-4301-negative": "-" + "9" * 4301,
        "hex-5000-digits": "0x" + "f" * 5000,
        "octal-long": "0o" + "7" * 5000,
        "base60-long": "1:2:" + "5" * 5000,
        "float-overflow": "1e99999",
        "float-inf": ".inf",
        "float-nan": ".nan",
        "int-10e30": "1" + "0" * 30,
        "underscored": "1" + "_000" * 2000,
    }.items():
        out[f"limit-{label}"] = "name: x\n" + body % number
        out[f"key-{label}"] = f"name: x\n{number}: 1\n" + body % 1
        out[f"version-{label}"] = "name: x\n" + (body % 1).replace(
            "limit: 1", f"map: {{function: a:b, version: {number}}}"
        )
        out[f"filter-{label}"] = "name: x\n" + (body % 1).replace("limit: 1", f"filter: {number}")
    return out


def _unicode_cases() -> dict[str, str]:
    good = EXAMPLE_TEXTS[0]
    return {
        "bom": "\ufeff" + good,
        "cyrillic-name": good.replace("name: ", "name: а", 1),
        "fullwidth-output": "name: x\ninputs: {a: a}\nstages: {s: {from: a, limit: 1}}\n"
        "outputs: {s: ｆｌｉｇｈｔｓ}\n",
        "division-slash-output": "name: x\ninputs: {a: a}\nstages: {s: {from: a, limit: 1}}\n"
        "outputs: {s: a∕b}\n",
        "rtl-override-key": "name: x\n\u202estages: 1\n",
        "emoji-stage": "name: x\ninputs: {a: a}\nstages: {😀: {from: a, limit: 1}}\n"
        "outputs: {😀: out}\n",
        "nul-raw": "name: x\x00\n",
        "nul-escaped-name": 'name: "x\\0"\n',
        "del-raw": "name: x\x7f\n",
        "c1-control": "name: x\x85y\n",
        "lone-surrogate": 'name: "\\ud800"\n',
        "escape-sequence": 'name: "\\x1b]0;pwned\\x07"\n',
        "line-separator": "name: x\u2028inputs: 1\n",
        "newline-in-output": "name: x\ninputs: {a: a}\nstages: {s: {from: a, limit: 1}}\n"
        'outputs: {s: "out\\n"}\n',
        "newline-in-name": 'name: "x\\n"\ninputs: {a: a}\nstages: {s: {from: a, limit: 1}}\n'
        "outputs: {s: out}\n",
        "dotdot-output": "name: x\ninputs: {a: a}\nstages: {s: {from: a, limit: 1}}\n"
        "outputs: {s: a..b}\n",
        "dotdot-input": "name: x\ninputs: {a: a..b}\nstages: {s: {from: a, limit: 1}}\n"
        "outputs: {s: out}\n",
        "newline-in-input": 'name: x\ninputs: {a: "a\\n"}\nstages: {s: {from: a, limit: 1}}\n'
        "outputs: {s: out}\n",
        "newline-in-function": "name: x\ninputs: {a: a}\nstages: {s: {from: a, map: {function: "
        '"os:system\\n", version: 1}}}\noutputs: {s: out}\n',
    }


def _alias_cases() -> dict[str, str]:
    good = "inputs: {a: a}\nstages:\n  s: {from: a, limit: 1}\noutputs: {s: out}\n"
    return {
        "undefined-alias": "name: *nope\n" + good,
        "duplicate-anchor": "name: &a x\ndescription: &a y\n" + good,
        "recursive-list": "name: &a [*a]\n" + good,
        "recursive-map": "name: &a {b: *a}\n" + good,
        "merge-key": "name: x\ninputs: {a: a}\nstages:\n  base: &b {from: a, limit: 1}\n"
        "  s: {<<: *b, limit: 2}\noutputs: {s: out}\n",
        "merge-non-mapping": "name: x\nstages: {<<: 1}\n" + good,
        "alias-as-key": "name: &n x\n*n : 1\n" + good,
        "shared-derive": "name: x\ninputs: {a: a}\nstages:\n"
        "  s: {from: a, derive: &d {y: x + 1, z: x * 2}}\n  t: {from: s, derive: *d}\n"
        "outputs: {t: out}\n",
        "multiple-documents": "name: x\n---\nname: y\n",
        "billion-laughs": billion_laughs(9),
        "billion-laughs-maps": billion_laughs(9, mapping=True),
        "merge-laughs": merge_laughs(8),
        "expression-laughs": expression_laughs(2000),
    }


def billion_laughs(levels: int, *, width: int = 9, mapping: bool = False) -> str:
    """The classic: each level repeats the previous one ``width`` times, ``width**levels``."""
    lines = ['l0: &l0 "lol"']
    for level in range(1, levels + 1):
        refs = [f"*l{level - 1}"] * width
        body = (
            "{" + ", ".join(f"k{i}: {r}" for i, r in enumerate(refs)) + "}"
            if mapping
            else "[" + ", ".join(refs) + "]"
        )
        lines.append(f"l{level}: &l{level} {body}")
    top = f"*l{levels}"
    lines += [
        f"name: {top}",
        f"inputs: {top}",
        f"stages: {{s: {{from: a, select: {top}, derive: {top}, aggregate: {top}}}}}",
        f"outputs: {top}",
    ]
    return "\n".join(lines) + "\n"


def merge_laughs(levels: int, width: int = 9) -> str:
    """Billion laughs through merge keys (``<<``), which PyYAML expands at the node level."""
    lines = ["m0: &m0 {k0: lol, k1: lol}"]
    for level in range(1, levels + 1):
        lines.append(f"m{level}: &m{level} {{<<: [{', '.join([f'*m{level - 1}'] * width)}]}}")
    lines += [f"name: x\ninputs: *m{levels}\nstages: {{s: {{from: a, derive: *m{levels}}}}}"]
    return "\n".join(lines) + "\noutputs: {s: out}\n"


def expression_laughs(copies: int) -> str:
    """One 10,000-character expression, used ``copies`` times through an alias: each use would
    be parsed again (minutes of work for a 40 kB file)."""
    expr = " and ".join(["a > 1"] * 1000)[:9990]
    expr = expr[: expr.rfind(" and ")]
    columns = "".join(f"      c{i}: *e\n" for i in range(copies))
    return (
        f"name: x\ndescription: &e '{expr}'\ninputs: {{a: a}}\nstages:\n  s:\n    from: a\n"
        f"    derive:\n{columns}outputs: {{s: out}}\n"
    )


CORPUS = {
    **{f"deep/{k}": v for k, v in _deep_cases().items()},
    **{f"number/{k}": v for k, v in _number_cases().items()},
    **{f"unicode/{k}": v for k, v in _unicode_cases().items()},
    **{f"alias/{k}": v for k, v in _alias_cases().items()},
}


#: What the corpus must come to: an error whose text says why, or a valid blueprint.
EXPECTED: dict[str, str] = {
    "deep/flow-lists-10k": "nested more than 64 levels deep",
    "deep/flow-maps-10k": "nested more than 64 levels deep",
    "deep/block-maps-2k": "nested more than 64 levels deep",
    "deep/block-lists-1k": "nested more than 64 levels deep",
    "deep/deep-in-stage": "nested more than 64 levels deep",
    "deep/just-deep-enough": "is not a valid blueprint name",
    "number/limit-int-5000-digits": "Exceeds the limit (4300 digits)",
    "number/limit-int-4301-negative": "Exceeds the limit (4300 digits)",
    "number/limit-float-nan": "expected a row count",
    "number/limit-float-inf": "expected a row count",
    "number/limit-float-overflow": "expected a row count",
    "number/filter-float-overflow": "number '1e99999' is too large",
    "number/filter-hex-5000-digits": "the number is larger than 2**14000",
    "number/limit-hex-5000-digits": "the number is larger than 2**14000",
    "number/version-hex-5000-digits": "the number is larger than 2**14000",
    "number/filter-octal-long": "is too large",
    "number/limit-int-10e30": "VALID",
    "number/key-int-5000-digits": "could not find expected ':'",  # a plain key of 5000 chars
    "number/version-float-nan": "map.version",
    "unicode/nul-raw": "character U+0000 ('\\x00') is not allowed in YAML",
    "unicode/del-raw": "character U+007F ('\\x7f') is not allowed in YAML",
    "unicode/cyrillic-name": "is not a valid blueprint name",
    "unicode/fullwidth-output": "is not a valid dataset name",
    "unicode/division-slash-output": "is not a valid dataset name",
    "unicode/rtl-override-key": "unknown key",
    "unicode/newline-in-output": "is not a valid dataset name",
    "unicode/newline-in-name": "is not a valid blueprint name",
    "unicode/dotdot-output": "'..' is not allowed in a dataset name",
    "unicode/dotdot-input": "expected a dataset REF",
    "unicode/newline-in-input": "expected a dataset REF",
    "unicode/newline-in-function": "expected 'package.module:function'",
    "unicode/escape-sequence": "is not a valid blueprint name",
    "alias/undefined-alias": "found undefined alias",
    "alias/duplicate-anchor": "found duplicate anchor",
    "alias/recursive-list": "found unconstructable recursive node",
    "alias/recursive-map": "found unconstructable recursive node",
    "alias/merge-non-mapping": "expected a mapping or list of mappings for merging",
    "alias/multiple-documents": "expected a single document",
    "alias/billion-laughs": "anchors and aliases expand this document",
    "alias/billion-laughs-maps": "anchors and aliases expand this document",
    "alias/merge-laughs": "anchors and aliases expand this document",
    "alias/expression-laughs": "anchors and aliases expand this document",
    "unicode/bom": "VALID",
    "alias/merge-key": "VALID",
    "alias/shared-derive": "VALID",
}


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_corpus_in_process(name: str) -> None:
    counts: Counter[str] = Counter()
    text = CORPUS[name]
    result = outcome(text, counts)
    want = EXPECTED.get(name)
    if want == "VALID":
        assert result == "valid"
    elif want is not None:
        with pytest.raises(BlueprintError) as caught:
            parse_blueprint(text, source="fuzz.yaml")
        assert want in str(caught.value)


def test_corpus_through_the_cli(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    """``chanbatch validate`` on every corpus document and the tag payloads: exit 0 with
    ``ok:``, or exit 2 with one ``Error:`` line (and, for several problems, one line per
    problem after it), never a traceback; and the outcome is the library's."""
    marker = tmp_path / "marker"
    documents = dict(CORPUS)
    for i, value in enumerate(payload_tags(marker)):  # all placements run in-process above
        documents[f"tag/{i}"] = _placements(value)[2]
    cases, paths = [], {}
    for index, (name, text) in enumerate(sorted(documents.items())):
        path = tmp_path / f"doc{index}.yaml"
        path.write_bytes(text.encode("utf-8", "surrogatepass"))
        paths[name] = path
        cases.append(case("validate", path, cwd=tmp_path))
    results = run_many(cases)
    counts: Counter[str] = Counter()
    for name, result in zip(sorted(documents), results, strict=True):
        try:
            expected: BlueprintError | None = None
            Blueprint.from_yaml(paths[name])
        except BlueprintError as exc:
            expected = exc
        except InputError:  # a NUL byte in the first 8: refused as a binary data file
            line = assert_clean_error(result, 2)
            assert line.startswith(f"Error: {paths[name]} is a binary data file"), f"{name}"
            counts["error"] += 1
            continue
        if expected is None:
            assert result.code == 0 and result.stdout.startswith("ok: "), f"{name}: {result}"
            counts["valid"] += 1
            continue
        line = assert_clean_error(result, 2)
        if len(expected.problems) == 1:
            assert len(result.err_lines) == 1, f"{name}: {result}"
            assert line.startswith(f"Error: {paths[name]}:"), f"{name}: {result}"
        if name.startswith("alias/") and "laughs" in name:
            assert "anchors and aliases expand this document" in line, f"{name}: {result}"
        counts["error"] += 1
    assert not marker.exists()
    record_counts(request, {"documents": len(results), **counts})


# -- billion laughs: time and memory in a fresh process --------------------------------------------

_MEASURE = """
import json, resource, sys, time, tracemalloc
from chanbatch.blueprint import BlueprintError, parse_blueprint

def parse(text):
    try:
        parse_blueprint(text)
        return "valid"
    except BlueprintError as exc:
        return str(exc)

out = {}
for name, text in json.loads(sys.stdin.read()).items():
    # Time without tracemalloc, which slows Python down several times; CPU time, so that a busy
    # machine does not make the bound flaky.
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    wall, cpu = time.perf_counter(), time.process_time()
    result = parse(text)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    tracemalloc.start()
    parse(text)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    out[name] = {
        "result": result,
        "seconds": wall,
        "cpu_seconds": cpu,
        "peak_bytes": peak,
        "rss_growth_bytes": (rss_after - rss_before) * 1024,
    }
print(json.dumps(out))
"""


def test_billion_laughs_is_refused_quickly_in_bounded_memory(
    request: pytest.FixtureRequest,
) -> None:
    documents = {
        "lists-9^9": billion_laughs(9),
        "lists-20^20": billion_laughs(20, width=20),
        "maps-9^9": billion_laughs(9, mapping=True),
        "merge-9^8": merge_laughs(8),
        "expression-2000x10k": expression_laughs(2000),
    }
    proc = subprocess.run(
        [sys.executable, "-c", _MEASURE],
        input=json.dumps(documents),
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    measured = json.loads(proc.stdout)
    for name, m in measured.items():
        assert "anchors and aliases expand this document" in m["result"], (name, m)
        assert m["cpu_seconds"] < 1.0, (name, m)
        assert m["peak_bytes"] < 50 * 2**20, (name, m)
        assert m["rss_growth_bytes"] < 50 * 2**20, (name, m)
    record_counts(
        request,
        {
            f"{name}_{key.replace('seconds', 'ms').replace('bytes', 'kib')}": (
                round(value * 1000) if key.endswith("seconds") else value // 1024
            )
            for name, m in measured.items()
            for key, value in m.items()
            if key != "result"
        },
    )
