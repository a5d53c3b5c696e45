"""A model version's queue arrays computed once, not per web process (issue 15).

The job that stores a version's predictions writes ``queue_arrays.npz`` beside the
version's heads; a process that has not kept the arrays reads that file instead of
decoding every Prediction row's JSON. A "new process" is simulated by clearing the
module's per-process caches.
"""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from sqlalchemy import insert, update
from tests.api.test_queues import SOURCES
from tests.api.texture_helpers import trained_texture_project

from loupe.db.models import ModelVersion, Prediction

CLASSES = tuple(SOURCES)
ASKS: list[dict[str, Any]] = [
    {"strategy": "uncertain", "n": 6},
    {"strategy": "uncertain", "n": 6, "measure": "margin"},
    {"strategy": "flagged", "n": 6},
    {"strategy": "band", "n": 6, "band_class": "monocyte", "band_lo": 0.0, "band_hi": 1.0},
    {"strategy": "hybrid", "n": 6},
]


def _new_process() -> None:
    """Forget everything this process kept about queues (as a fresh web process)."""
    from loupe.services.queues import arrays

    arrays._OUTPUTS.clear()
    arrays._IDS.clear()
    arrays._STORES.clear()
    arrays._CHECKED.clear()
    arrays._VERSION_CHECKED.clear()


@pytest.fixture
def trained(settings: Any, make_user: Any, make_project: Any, login: Any, tmp_path: Path) -> Any:
    """A trained classify project (26 real tiles, 'classic' features, inline jobs)."""
    p = trained_texture_project(settings, make_user, make_project, login, tmp_path)
    vid = p["job"]["result"]["model_version_id"]
    return {"client": p["c"], "pid": p["pid"], "vid": vid, "owner": p["owner"]}


def _answers(c: Any, pid: int) -> list[list[tuple[int, float]]]:
    """The queue's (id, score) lists for every ask (the caller's leases are replaced)."""
    out = []
    for params in ASKS:
        r = c.post(f"/api/projects/{pid}/queue", params=params)
        assert r.status_code == 200, (params, r.text)
        body = r.json()
        assert body["strategy_used"] == params["strategy"], body
        out.append([(i["id"], i["score"]) for i in body["items"]])
    assert any(out), out
    return out


def _decoded(settings: Any, vid: int) -> Any:
    """The version's arrays decoded from its rows now, and their key."""
    from loupe.db.session import session_scope
    from loupe.tasks.prediction_arrays import decode, output_rows

    with session_scope(settings.db_url, write=False) as db:
        version = db.get(ModelVersion, vid)
        assert version is not None
        rows, key = output_rows(db, version)
        return decode(rows), key


def _same(a: Any, b: Any) -> None:
    assert a.class_names == b.class_names
    np.testing.assert_array_equal(a.item_ids, b.item_ids)
    assert (a.probs is None) == (b.probs is None)
    if a.probs is not None:
        np.testing.assert_array_equal(a.probs, b.probs)
    np.testing.assert_array_equal(a.spread, b.spread)
    np.testing.assert_array_equal(a.flagged, b.flagged)


def _sidecar(settings: Any, pid: int, vid: int) -> Path:
    from loupe.tasks.prediction_arrays import sidecar_path

    return sidecar_path(settings, pid, vid)


def _break_every_output(settings: Any, vid: int) -> None:
    """Every row's JSON made undecodable (same count and ids: the key stays)."""
    from loupe.db.session import session_scope

    with session_scope(settings.db_url) as db:
        db.execute(
            update(Prediction)
            .where(Prediction.model_version_id == vid)
            .values(output={"probs": dict.fromkeys(CLASSES, "not a number")})
        )


def test_the_job_writes_the_sidecar_and_a_new_process_answers_from_it(
    settings: Any, trained: Any
) -> None:
    from loupe.tasks.prediction_arrays import read_sidecar

    c, pid, vid = trained["client"], trained["pid"], trained["vid"]
    path = _sidecar(settings, pid, vid)
    assert path.is_file(), "the training job did not write the queue arrays"
    assert path.stat().st_mode & 0o777 == 0o644  # every web process may read it
    assert not [p.name for p in path.parent.iterdir() if p.name.startswith(".tmp-")]
    decoded, key = _decoded(settings, vid)
    assert key.count == 26 and sorted(decoded.class_names) == sorted(CLASSES)
    from_job = read_sidecar(path, key)
    assert from_job is not None, "the job's file is not for the database's key"
    _same(from_job, decoded)  # also the class order PostgreSQL's JSONB gives back

    # without the file: decoded (and the file written again, the same arrays)
    path.unlink()
    _new_process()
    without = _answers(c, pid)
    assert path.is_file(), "the process that decoded the rows did not write the file"
    rewritten = read_sidecar(path, key)
    assert rewritten is not None
    _same(rewritten, decoded)

    # a new process with the file answers without decoding: the rows are now garbage
    _break_every_output(settings, vid)
    _new_process()
    assert _answers(c, pid) == without
    # ... which a process without the file cannot decode at all
    path.unlink()
    _new_process()
    with pytest.raises(ValueError, match="not a number"):
        c.post(f"/api/projects/{pid}/queue", params=ASKS[0])


def test_added_predictions_make_the_file_stale_and_it_is_rebuilt(
    settings: Any, trained: Any, make_item: Any
) -> None:
    from loupe.db.models import Project
    from loupe.db.session import session_scope
    from loupe.services.queues.arrays import load_arrays
    from loupe.tasks.prediction_arrays import read_sidecar
    from loupe.tasks.types import PredictionRow

    pid, vid = trained["pid"], trained["vid"]
    path = _sidecar(settings, pid, vid)
    _, old_key = _decoded(settings, vid)
    project = SimpleNamespace(id=pid)  # all make_item needs

    def probs_of(item_id: int) -> dict[str, float]:
        _new_process()
        with session_scope(settings.db_url, write=False) as s:
            current = s.get(Project, pid)
            assert current is not None
            arrays = load_arrays(s, current, settings)
        row = int(np.searchsorted(arrays.ids, item_id))
        assert arrays.ids[row] == item_id
        assert arrays.probs is not None
        return dict(zip(arrays.class_names, arrays.probs[row].tolist(), strict=True))

    # 1. a job adds a prediction to the active version: it rewrites the file
    first = make_item(project)
    given = {"neutrophil": 0.125, "lymphocyte": 0.25, "monocyte": 0.625}
    from loupe.tasks.predictions import insert_prediction_rows

    row = PredictionRow(
        item_id=first.id,
        label="monocyte",
        confidence=0.625,
        uncertainty=0.375,
        flagged=True,
        flag_reason="test",
        output={"probs": given},
        members={},
    )
    insert_prediction_rows(settings, pid, vid, [row])
    decoded, key = _decoded(settings, vid)
    assert key.count == old_key.count + 1 and key != old_key
    assert read_sidecar(path, old_key) is None  # stale for the old key
    from_job = read_sidecar(path, key)
    assert from_job is not None
    _same(from_job, decoded)
    assert probs_of(first.id) == given  # not the 1/3 of an item the arrays lack

    # 2. a row written without the job's hook (as the 3-D path does): the stale file
    # is not used, the rows are decoded and the file rewritten for the next process
    second = make_item(project)
    other = {"neutrophil": 0.5, "lymphocyte": 0.375, "monocyte": 0.125}
    with session_scope(settings.db_url) as s:
        s.execute(
            insert(Prediction),
            [
                {
                    "project_id": pid,
                    "item_id": second.id,
                    "model_version_id": vid,
                    "output": {"probs": other},
                    "uncertainty": 0.5,
                    "flagged": False,
                    "members": {},
                }
            ],
        )
    assert read_sidecar(path, _decoded(settings, vid)[1]) is None
    assert probs_of(second.id) == other
    decoded, key = _decoded(settings, vid)
    rebuilt = read_sidecar(path, key)
    assert rebuilt is not None and key.count == old_key.count + 2
    _same(rebuilt, decoded)


@pytest.mark.parametrize("damage", ["garbage", "truncated", "wrong shapes"])
def test_a_corrupt_file_is_logged_ignored_and_rebuilt(
    settings: Any, trained: Any, damage: str, caplog: pytest.LogCaptureFixture
) -> None:
    from loupe.tasks.prediction_arrays import OutputKey, read_sidecar, write_sidecar

    c, pid, vid = trained["client"], trained["pid"], trained["vid"]
    path = _sidecar(settings, pid, vid)
    _new_process()
    expected = _answers(c, pid)
    decoded, key = _decoded(settings, vid)
    good = path.read_bytes()
    if damage == "garbage":
        path.write_bytes(b"this is not a numpy archive")
    elif damage == "truncated":
        path.write_bytes(good[: len(good) // 2])
    else:  # a well-formed archive for this key whose arrays lack rows
        short = type(decoded)(
            decoded.item_ids[:-1],
            decoded.class_names,
            None if decoded.probs is None else decoded.probs[:-1],
            decoded.spread[:-1],
            decoded.flagged[:-1],
        )
        write_sidecar(path, short, OutputKey(key.count, key.newest, key.created))
    _new_process()
    with caplog.at_level(logging.WARNING, logger="loupe.tasks.prediction_arrays"):
        assert _answers(c, pid) == expected
    assert any("unreadable queue-arrays file" in r.getMessage() for r in caplog.records)
    rebuilt = read_sidecar(path, key)
    assert rebuilt is not None
    _same(rebuilt, decoded)


def test_a_version_with_no_predictions_has_no_file(settings: Any, trained: Any) -> None:
    """The hook skips a version without rows (nothing to decode)."""
    from loupe.db.session import session_scope
    from loupe.tasks.predictions import insert_prediction_rows

    pid, vid = trained["pid"], trained["vid"]
    with session_scope(settings.db_url) as s:
        version = ModelVersion(project_id=pid, number=99, status="training", members=["classic"])
        s.add(version)
        s.flush()
        empty_id = version.id
    insert_prediction_rows(settings, pid, empty_id, [])
    assert not _sidecar(settings, pid, empty_id).exists()
    assert _sidecar(settings, pid, vid).exists()


def test_a_process_looks_at_the_items_once_per_recheck_interval(
    settings: Any, trained: Any, make_item: Any
) -> None:
    """Within ``queue_recheck_s`` a process reuses its last look at the items (no
    aggregate query per queue request); after it, a new item is in the arrays. With 0
    every request looks."""
    import time

    from loupe.db.models import Project
    from loupe.db.session import session_scope
    from loupe.services.queues.arrays import load_arrays

    pid = trained["pid"]

    def ids(recheck: float) -> set[int]:
        with session_scope(settings.db_url, write=False) as s:
            current = s.get(Project, pid)
            assert current is not None
            return set(
                load_arrays(
                    s, current, settings.model_copy(update={"queue_recheck_s": recheck})
                ).ids.tolist()
            )

    _new_process()
    before = ids(30.0)
    added = make_item(SimpleNamespace(id=pid))
    assert added.id not in ids(30.0)  # the look of a moment ago still holds
    assert added.id in ids(0.0)  # a fresh look
    assert ids(30.0) == before | {added.id}
    slow = ids(0.05)
    time.sleep(0.1)
    assert slow == ids(0.05)
