"""Schema validation and label checks, without a database."""

from __future__ import annotations

import pytest

from loupe.errors import LoupeError
from loupe.services.projects.schema import schema_from_cli, validate_label, validate_schema


def test_cli_metrics_parse_into_a_score_schema() -> None:
    s = schema_from_cli("score", metrics="fibrosis:0:4:1,atrophy:0:3:0.5,architecture")
    assert [(m["name"], m["min"], m["max"], m["step"]) for m in s["metrics"]] == [
        ("fibrosis", 0.0, 4.0, 1.0),
        ("atrophy", 0.0, 3.0, 0.5),
        ("architecture", 0.0, 4.0, 1.0),
    ]


def test_cli_classes_get_colours_and_hotkeys() -> None:
    s = schema_from_cli("classify", classes="neutrophil, lymphocyte ,monocyte")
    assert [c["name"] for c in s["classes"]] == ["neutrophil", "lymphocyte", "monocyte"]
    assert [c["hotkey"] for c in s["classes"]] == ["1", "2", "3"]
    assert len({c["color"] for c in s["classes"]}) == 3


@pytest.mark.parametrize(
    ("task", "kwargs"),
    [
        ("score", {"classes": "a,b"}),
        ("classify", {"metrics": "f:0:4:1"}),
        ("score", {"metrics": "f:0"}),
        ("score", {"metrics": "f:a:b:c"}),
        ("classify", {}),
    ],
)
def test_cli_schema_errors(task: str, kwargs: dict[str, str]) -> None:
    with pytest.raises(LoupeError) as exc:
        schema_from_cli(task, **kwargs)
    assert exc.value.code == "invalid"


def test_mask_classes_get_distinct_values() -> None:
    s = validate_schema(
        "volume", {"classes": [{"name": "a", "value": 2}, {"name": "b"}, {"name": "c"}]}
    )
    assert [c["value"] for c in s["classes"]] == [2, 1, 3]


def test_binary_classify_is_two_classes() -> None:
    s = validate_schema("classify", {"classes": [{"name": "blast"}, {"name": "normal"}]})
    assert len(s["classes"]) == 2


def test_label_checks() -> None:
    schema = validate_schema("score", {"metrics": [{"name": "f", "min": 0, "max": 2, "step": 0.5}]})
    assert validate_label("score", schema, kind="scores", scores={"f": 1.5}) == (None, {"f": 1.5})
    with pytest.raises(LoupeError, match="step"):
        validate_label("score", schema, kind="scores", scores={"f": 1.25})
    with pytest.raises(LoupeError, match="not a number"):
        validate_label("score", schema, kind="scores", scores={"f": True})
    seg = validate_schema("segment", {"classes": [{"name": "n"}]})
    with pytest.raises(LoupeError, match="non-empty 'data'"):
        validate_label("segment", seg, kind="mask", data={})
    assert validate_label("segment", seg, kind="mask", data={"path": "m.png"}) == (None, None)
