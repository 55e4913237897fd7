"""The corpus of bad blueprints: each ``bad/NAME.yaml`` must fail with exactly ``NAME.expected``.

The expected text is what ``chanbatch validate`` prints after ``Error: ``, so a change here is a
change users see. Paths in it are relative to the repository root, as a user would pass them.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from chanbatch.blueprint import BlueprintError, load_blueprint

HERE = Path(__file__).parent
REPO = HERE.parent.parent
CASES = sorted((HERE / "bad").glob("*.yaml"))


def test_corpus_is_complete() -> None:
    assert len(CASES) >= 30
    for case in CASES:
        assert case.with_suffix(".expected").is_file(), f"{case.name} has no .expected file"


@pytest.mark.parametrize("case", CASES, ids=lambda path: path.stem)
def test_bad_blueprint_fails_with_expected_text(
    case: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(REPO)
    relative = case.relative_to(REPO).as_posix()
    with pytest.raises(BlueprintError) as caught:
        load_blueprint(relative)
    expected = case.with_suffix(".expected").read_text(encoding="utf-8").rstrip("\n")
    assert str(caught.value) == expected
    for problem in caught.value.problems:
        assert problem.file == relative
        assert problem.line is not None and problem.line >= 1
