"""The CLI contract that the README, scripts and later issues rely on."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from loupe.cli import app

runner = CliRunner()


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["serve"],
        ["worker"],
        ["user", "create"],
        ["project", "create"],
        ["project", "set"],
        ["ingest"],
        ["openapi"],
        ["demo"],
    ],
)
def test_every_command_has_help(args: list[str]) -> None:
    r = runner.invoke(app, [*args, "--help"])
    assert r.exit_code == 0, r.output
    assert "Usage" in r.output


def test_user_project_ingest_flow(settings: Any, tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.setenv("LOUPE_PASSWORD", "a long password")
    r = runner.invoke(app, ["user", "create", "boss@lab.org", "--admin"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(
        app,
        [
            "project",
            "create",
            "Fibrosis",
            "--task",
            "score",
            "--metrics",
            "fibrosis:0:4:1,atrophy:0:4:1",
        ],
    )
    assert r.exit_code == 0, r.output
    pid = int(r.output.strip())
    bad = runner.invoke(app, ["project", "create", "Bad", "--task", "score", "--classes", "a,b"])
    assert bad.exit_code == 1 and "metrics" in bad.output

    folder = tmp_path / "slides"
    (folder / "sub").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(
            folder / "sub" / f"S-3602-10X_Image00{i}_ch00.png"
        )
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (folder / "empty.tif").write_bytes(b"")

    r = runner.invoke(
        app,
        [
            "ingest",
            "Fibrosis",
            str(folder),
            "--json",
            "--case-pattern",
            r"(?P<case>S-\d+)-(?P<mag>\d+X)_Image(?P<serial>\d+)",
        ],
    )
    assert r.exit_code == 3, r.output
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert summary["imported"] == 3 and summary["existing"] == 0
    assert sorted(Path(f["path"]).name for f in summary["failed"]) == ["broken.png", "empty.tif"]
    assert all(f["reason"] for f in summary["failed"])

    again = runner.invoke(app, ["ingest", str(pid), str(folder / "sub"), "--json"])
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout.strip().splitlines()[-1]) == {
        "imported": 0,
        "existing": 3,
        "failed": [],
    }


def test_openapi_prints_the_schema() -> None:
    r = runner.invoke(app, ["openapi"])
    assert r.exit_code == 0
    spec = json.loads(r.output)
    assert "/api/projects/{project_id}/items" in spec["paths"]
