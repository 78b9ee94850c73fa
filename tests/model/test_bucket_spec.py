"""A Bucket's spec promises only what the object store does."""

from __future__ import annotations

import pytest

from cloudland.errors import Invalid
from cloudland.model.validate import parse_object


def bucket(spec: dict[str, object]) -> dict[str, object]:
    return {"apiVersion": "cloudland/v1", "kind": "Bucket", "metadata": {"name": "photos"},
            "spec": spec}


def test_versioning_true_is_refused_with_its_field_and_what_to_do() -> None:
    with pytest.raises(Invalid) as refused:
        parse_object(bucket({"versioning": True}))
    assert refused.value.field == "spec.versioning"
    assert "keeps one version" in str(refused.value)
    assert "set it to false" in str(refused.value)


def test_versioning_false_or_left_out_is_accepted() -> None:
    assert parse_object(bucket({"versioning": False}))["spec"]["versioning"] is False
    assert parse_object(bucket({}))["spec"]["versioning"] is False
