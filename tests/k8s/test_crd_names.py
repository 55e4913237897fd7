"""One dataset-name rule (``chanbatch.ids.DATASET_NAME``) for the store, the blueprint checks
and the Blueprint CRD: a name is refused by the API server exactly when the store and the
blueprint parser refuse it."""

from __future__ import annotations

import re

import pytest

from chanbatch.blueprint import checks
from chanbatch.errors import InvalidNameError
from chanbatch.ids import DATASET_NAME
from chanbatch.k8s.crd import blueprint_crd
from chanbatch.snapshot import names

NAMES = ["flights", "a", "A-1.b_2", "9x", "x" * 128, "x" * 129, "-x", ".x", "a/b", "a b", "", "é"]


def embedded() -> dict:
    schema = blueprint_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema["properties"]["spec"]["properties"]["blueprint"]["properties"]


def test_every_layer_holds_the_same_rule() -> None:
    assert checks.DATASET_NAME is DATASET_NAME
    assert names.DATASET_NAME is DATASET_NAME
    props = embedded()
    assert props["outputs"]["additionalProperties"]["pattern"] == DATASET_NAME.pattern
    assert props["name"]["pattern"] == DATASET_NAME.pattern
    assert props["inputs"]["additionalProperties"]["pattern"].startswith(
        DATASET_NAME.pattern.rstrip("$")
    )


@pytest.mark.parametrize("name", NAMES)
def test_the_crd_and_the_store_agree_on_a_name(name: str) -> None:
    # Written out here, not imported: the rule of DESIGN.md section 2.
    expected = re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}", name) is not None
    crd = re.search(embedded()["outputs"]["additionalProperties"]["pattern"], name) is not None
    try:
        names.check_dataset_name(name)
        store = True
    except InvalidNameError:
        store = False
    assert crd == store == expected
