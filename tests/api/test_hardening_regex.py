"""User regular expressions cannot stall the server (issue 11, item 1).

``case_pattern`` is matched with RE2 (linear time); patterns RE2 cannot run
(backreferences, lookarounds) are refused with a 422 that says why.
"""

from __future__ import annotations

import io
import threading
import time
from typing import Any

import numpy as np
from fastapi.testclient import TestClient
from PIL import Image

EVIL = r"(?P<case>(a+)+)$"
# 60 'a's then a miss: Python's backtracking `re` needs ~2**60 steps here.
EVIL_NAME = "a" * 60 + "!.png"


def _png() -> bytes:
    buf = io.BytesIO()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def test_catastrophic_pattern_on_a_long_name_finishes(
    app: Any, login: Any, make_user: Any, make_project: Any
) -> None:
    owner = make_user()
    project = make_project(owner)
    c = login(owner)
    r = c.patch(f"/api/projects/{project.id}", json={"settings": {"case_pattern": EVIL}})
    assert r.status_code == 200, r.text
    url = f"/api/projects/{project.id}/uploads"
    outcome: dict[str, Any] = {}

    def upload() -> None:
        t0 = time.perf_counter()
        res = c.post(url, files=[("files", (EVIL_NAME, _png(), "image/png"))])
        outcome["status"] = res.status_code
        outcome["seconds"] = time.perf_counter() - t0

    worker = threading.Thread(target=upload, daemon=True)
    worker.start()
    # The server keeps answering while (and after) the pattern runs.
    other = TestClient(app)
    assert other.get("/api/info").status_code == 200
    # With a backtracking engine this name takes longer than the age of the universe;
    # RE2 runs in linear time. The bound is generous (a loaded CI machine), not a timing.
    worker.join(timeout=30)
    assert not worker.is_alive(), "the upload with a catastrophic case_pattern never finished"
    assert outcome["status"] == 200
    print(f"catastrophic case_pattern upload answered in {outcome['seconds']:.3f}s")
    items = c.get(f"/api/projects/{project.id}/items").json()["data"]
    assert [i["filename"] for i in items] == [EVIL_NAME]


def test_patterns_re2_cannot_run_are_refused_with_a_clear_422(
    login: Any, make_user: Any, make_project: Any
) -> None:
    owner = make_user()
    project = make_project(owner)
    c = login(owner)
    for pattern in (r"(?P<case>a)\1", r"(?P<case>\w+)(?=_x)", r"(?<!b)(?P<case>a)"):
        r = c.patch(f"/api/projects/{project.id}", json={"settings": {"case_pattern": pattern}})
        assert r.status_code == 422, (pattern, r.text)
        message = r.json()["detail"]["message"]
        assert "backreferences and lookarounds are not supported" in message
        r = c.post(
            f"/api/projects/{project.id}/uploads",
            files=[("files", ("x.png", _png(), "image/png"))],
            data={"case_pattern": pattern},
        )
        assert r.status_code == 422, (pattern, r.text)
